"""Help inside the program, offline: the user guide and the method (the docs/ pages, shipped with the
program) in a browser window, and the keyboard shortcuts as the window's own actions define them."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

#: Help pages: (menu text, file in docs/)
PAGES = (("&User guide", "gui.md"), ("The &method", "method.md"), ("The &command line", "cli.md"))


def docs_dir() -> Path | None:
    """docs/: inside a PyInstaller bundle, or next to the package in a checkout."""
    bundled = getattr(sys, "_MEIPASS", None)
    candidates = [Path(bundled) / "docs"] if bundled else []
    candidates.append(Path(__file__).resolve().parents[2] / "docs")
    return next((c for c in candidates if (c / "gui.md").is_file()), None)


def shortcuts_markdown(actions: list[QAction]) -> str:
    """A table of every action with a key, in the order given (menus first to last)."""
    rows, seen = [], set()
    for a in actions:
        key = a.shortcut().toString()
        name = a.text().replace("&", "").rstrip("…").strip()
        if key and (name, key) not in seen:
            seen.add((name, key))
            rows.append(f"| {key} | {name} |")
    return (
        "# Keyboard shortcuts\n\n| key | what it does |\n|---|---|\n"
        + "\n".join(rows)
        + (
            "\n\nIn the viewer's verdict table: **S** spurious, **R** relevant, **U** undecided, **C** take your "
            "verdict back (the critic's applies). While a text box has the keyboard, letters are typed, not "
            "taken as shortcuts.\n"
        )
    )


class HelpWindow(QDialog):
    """A Markdown page in a browser; links between the docs pages work, others open nothing."""

    def __init__(self, title: str, markdown: str, base: Path | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(False)  # offline: no link leaves the program
        if base is not None:
            self.browser.setSearchPaths([str(base)])
        self.browser.setMarkdown(markdown)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.browser, 1)
        lay.addWidget(buttons)
        screen = self.screen().availableGeometry() if self.screen() else None
        w = min(900, screen.width() - 40) if screen else 900
        h = min(760, screen.height() - 80) if screen else 700
        self.resize(w, h)


def page_window(title: str, name: str, parent: QWidget | None = None) -> HelpWindow:
    folder = docs_dir()
    if folder is None or not (folder / name).is_file():
        text = (
            f"# {title}\n\nThe documentation pages were not found next to the program. They are in the "
            "docs/ folder of the program's source, and inside the packaged program."
        )
        return HelpWindow(title, text, None, parent)
    return HelpWindow(title, (folder / name).read_text(encoding="utf-8"), folder, parent)
