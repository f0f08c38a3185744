"""Light and dark themes that follow the system unless the user picks one (View > Theme).

Fusion style everywhere, so the program looks the same on every workstation; a dark palette when the
system (Qt's colour-scheme hint) or the user asks for it; pyqtgraph's plot colours follow the palette.
"""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QWidget

THEMES = ("system", "light", "dark")


def system_is_dark() -> bool:
    hints = QGuiApplication.styleHints()
    return hints.colorScheme() == Qt.ColorScheme.Dark


def _dark_palette() -> QPalette:
    p = QPalette()
    base, window, text = QColor(30, 32, 36), QColor(43, 45, 50), QColor(225, 227, 230)
    disabled = QColor(130, 132, 136)
    for role, color in [
        (QPalette.ColorRole.Window, window),
        (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Base, base),
        (QPalette.ColorRole.AlternateBase, QColor(38, 40, 45)),
        (QPalette.ColorRole.ToolTipBase, QColor(55, 57, 62)),
        (QPalette.ColorRole.ToolTipText, text),
        (QPalette.ColorRole.PlaceholderText, disabled),
        (QPalette.ColorRole.Text, text),
        (QPalette.ColorRole.Button, window),
        (QPalette.ColorRole.ButtonText, text),
        (QPalette.ColorRole.BrightText, QColor(255, 90, 90)),
        (QPalette.ColorRole.Link, QColor(110, 170, 255)),
        (QPalette.ColorRole.Highlight, QColor(52, 120, 220)),
        (QPalette.ColorRole.HighlightedText, QColor(255, 255, 255)),
        (QPalette.ColorRole.Mid, QColor(60, 62, 68)),
        (QPalette.ColorRole.Dark, QColor(22, 23, 26)),
        (QPalette.ColorRole.Light, QColor(70, 72, 78)),
    ]:
        p.setColor(role, color)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return p


def current_theme() -> str:
    t = str(QSettings().value("view/theme", "system"))
    return t if t in THEMES else "system"


def is_dark(theme: str | None = None) -> bool:
    theme = theme or current_theme()
    return system_is_dark() if theme == "system" else theme == "dark"


def apply_theme(app: QApplication, theme: str | None = None, root: QWidget | None = None) -> bool:
    """Apply (and remember) a theme; returns whether it is dark. ``root``: widgets whose plots to recolour."""
    import pyqtgraph as pg

    theme = theme or current_theme()
    QSettings().setValue("view/theme", theme)
    app.setStyle("Fusion")
    dark = is_dark(theme)
    palette = _dark_palette() if dark else app.style().standardPalette()
    app.setPalette(palette)
    bg = palette.color(QPalette.ColorRole.Base)
    fg = palette.color(QPalette.ColorRole.Text)
    pg.setConfigOptions(background=bg, foreground=fg, antialias=True)
    if root is not None:
        for view in root.findChildren(pg.GraphicsView):
            view.setBackground(bg)
    return dark
