"""The one place where failures are told: a list of messages in plain words, details on request.

Job failures (from the JobRunner), failures of GUI-thread actions (session.report) and notices all land
here. Nothing pops up a traceback: the details (the exception and its traceback) sit behind a button, to
copy into a bug report.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.core.runtime.errors import UserError

LEVEL_ICONS = {
    "error": QStyle.StandardPixmap.SP_MessageBoxCritical,
    "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
    "info": QStyle.StandardPixmap.SP_MessageBoxInformation,
}


def open_file(path: str | Path) -> bool:
    """Open a file the program wrote (a report, an export) with the desktop's program for it."""
    return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))))


class DetailsDialog(QDialog):
    def __init__(self, error: UserError, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(error.title)
        self.resize(720, 420)
        lay = QVBoxLayout(self)
        msg = QLabel(error.message)
        msg.setWordWrap(True)
        lay.addWidget(msg)
        self.details = QPlainTextEdit(error.details or "(no technical details)")
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        lay.addWidget(self.details, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = buttons.addButton("Copy details", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(f"{error.title}\n{error.message}\n\n{error.details}")
        )
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)


class MessagesPane(QWidget):
    """Newest first; double-click or 'Details' shows what went wrong technically."""

    posted = Signal(str, str)  # level, title: the window raises the pane and flashes the status bar

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("MessagesPane")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        self.list.itemDoubleClicked.connect(lambda _: self._on_double_click())
        lay.addWidget(self.list, 1)
        row = QVBoxLayout()
        self.details_button = QPushButton("Details…")
        self.details_button.setToolTip(
            "The technical details of the selected message, to copy into a bug report."
        )
        self.details_button.clicked.connect(self.show_details)
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Open the file the selected message names (the report, the export)")
        self.open_button.clicked.connect(lambda _=False: self.open_selected())
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.list.clear)
        row.addWidget(self.open_button)
        row.addWidget(self.details_button)
        row.addWidget(self.clear_button)
        row.addStretch(1)
        lay.addLayout(row)
        self.list.currentItemChanged.connect(self._update_buttons)
        self._update_buttons()

    def _update_buttons(self, *_: object) -> None:
        item = self.list.currentItem()
        err = item.data(Qt.ItemDataRole.UserRole) if item else None
        self.details_button.setEnabled(bool(err is not None and err.details))
        self.open_button.setEnabled(bool(self.paths(item)))

    def post_error(self, error: UserError) -> None:
        level = "info" if error.kind == "cancelled" else "error"
        self._add(level, error.title, error.message, error)

    def post(self, level: str, title: str, message: str = "", paths: list[Path] | None = None) -> None:
        """A message; ``paths`` (files it names) are opened by a double-click or Open, the first one."""
        self._add(level, title, message, None, paths)

    def _add(
        self, level: str, title: str, message: str, error: UserError | None, paths: list[Path] | None = None
    ) -> None:
        stamp = time.strftime("%H:%M:%S")
        item = QListWidgetItem(
            self.style().standardIcon(LEVEL_ICONS.get(level, LEVEL_ICONS["info"])),
            f"{stamp}  {title}\n{message}".rstrip(),
        )
        item.setData(Qt.ItemDataRole.UserRole, error)
        item.setData(Qt.ItemDataRole.UserRole + 1, level)
        if paths:
            item.setData(Qt.ItemDataRole.UserRole + 2, [str(p) for p in paths])
            item.setToolTip("Double-click or Open to open " + Path(paths[0]).name)
            font = item.font()
            font.setUnderline(True)
            item.setFont(font)
        self.list.insertItem(0, item)
        if level == "error" or paths:
            self.list.setCurrentItem(item)  # ready for "Details…" or "Open"
        self.list.scrollToTop()
        self.posted.emit(level, title)

    def messages(self) -> list[tuple[str, str]]:
        """(level, text) of every message, newest first (for tests and the audit view)."""
        return [
            (self.list.item(i).data(Qt.ItemDataRole.UserRole + 1), self.list.item(i).text())
            for i in range(self.list.count())
        ]

    @staticmethod
    def paths(item: QListWidgetItem | None) -> list[str]:
        return list(item.data(Qt.ItemDataRole.UserRole + 2) or []) if item is not None else []

    def open_selected(self) -> bool:
        """Open the first file the selected message names with the desktop's program for it."""
        paths = self.paths(self.list.currentItem())
        return bool(paths) and open_file(paths[0])

    def _on_double_click(self) -> None:
        if not self.open_selected():
            self.show_details()

    def show_details(self) -> None:
        item = self.list.currentItem()
        err = item.data(Qt.ItemDataRole.UserRole) if item else None
        if err is not None:
            DetailsDialog(err, self).exec()
