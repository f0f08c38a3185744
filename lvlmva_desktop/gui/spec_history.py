"""The version history of the expert's specification (class descriptions, judge examples).

Lists the saved versions with date, author and the critique runs that used each; shows an old version
and restores it (the spec editor saves it as a new version, so nothing is ever overwritten).
"""

from __future__ import annotations

import html
import json
import logging
import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.lvlm.prompts import PromptError, parse_examples

log = logging.getLogger(__name__)

EXAMPLES = "judge_examples.json"
PARTS = ("descriptions", "examples")


def critique_runs_by_version(project) -> dict[str, dict[int, list[int]]]:
    """Which critique runs used which version: {"descriptions": {version: [run ids]}, "examples": {...}}.

    Read from what each run recorded (its class_descriptions_version; an LVLM critic's template versions).
    Failed runs are left out; a cancelled run used its versions for the images it finished.
    """
    out: dict[str, dict[int, list[int]]] = {p: {} for p in PARTS}
    for r in project.runs("critique", include_failed=False):
        try:
            s = json.loads(r["settings"] or "{}")
        except ValueError:
            continue
        v = s.get("class_descriptions_version")
        if isinstance(v, int):
            out["descriptions"].setdefault(v, []).append(int(r["id"]))
        used = ((s.get("critic") or {}).get("template_versions") or {}).get(EXAMPLES)
        if isinstance(used, int) and used > 0:
            out["examples"].setdefault(used, []).append(int(r["id"]))
    return out


def part_versions(project, part: str) -> list[dict]:
    """Saved versions of one part, oldest first: {version, created, author, content} (content None when an
    old examples text cannot be read)."""
    if part == "descriptions":
        return [{**h, "content": h["descriptions"]} for h in project.class_descriptions_history()]
    out = []
    for r in project.prompt_template_history(EXAMPLES):
        try:
            content = [(e["text"], e["answer"]) for e in parse_examples(r["text"])]
        except PromptError:
            content = None
        out.append(
            {"version": int(r["version"]), "created": r["created"], "author": r["author"], "content": content}
        )
    return out


def content_html(part: str, content) -> str:
    e = html.escape
    if content is None:
        return "<p>This version's text cannot be read as examples.</p>"
    if part == "descriptions":
        return "".join(f"<p><b>{e(c)}</b><br>{e(t) or '<i>(empty)</i>'}</p>" for c, t in content.items())
    return (
        "".join(
            f"<p><b>Example {i}</b><br>{e(t).replace(chr(10), '<br>')}<br>"
            f"<span style='color:#808080'>Answer:</span> <code>{e(a)}</code></p>"
            for i, (t, a) in enumerate(content, 1)
        )
        or "<p><i>No examples.</i></p>"
    )


class HistoryView(QWidget):
    """The versions of one part of the specification, one of them shown, with a Restore button."""

    def __init__(self, editor) -> None:
        super().__init__(editor)
        self.editor = editor
        self._versions: list[dict] = []
        self.part_combo = QComboBox()
        self.part_combo.addItem("Class descriptions", "descriptions")
        self.part_combo.addItem("Judge examples", "examples")
        self.part_combo.currentIndexChanged.connect(self.refresh)
        top = QHBoxLayout()
        top.addWidget(QLabel("Versions of"))
        top.addWidget(self.part_combo)
        top.addStretch(1)

        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Version", "Saved", "By", "Used by critique runs"])
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        for col in range(3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.preview = QTextBrowser()
        self.empty_label = QLabel()
        self.empty_label.setWordWrap(True)
        self.empty_label.setStyleSheet("color:#808080")
        self.restore_button = QPushButton("Restore this version")
        self.restore_button.setToolTip(
            "Saves this version's text as a new version; Undo in the editor brings back the text before it"
        )
        self.restore_button.clicked.connect(self._restore_selected)
        bottom = QHBoxLayout()
        bottom.addWidget(self.empty_label, 1)
        bottom.addWidget(self.restore_button)

        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.preview)
        split.setSizes([160, 300])
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        lay.addLayout(bottom)

    def part(self) -> str:
        return str(self.part_combo.currentData())

    def select_part(self, part: str) -> None:
        self.part_combo.setCurrentIndex(PARTS.index(part))

    def refresh(self) -> None:
        """Re-read the versions of the chosen part from the project (after a save, a restore, a run)."""
        p = self.editor.session.project
        part = self.part()
        self._versions = part_versions(p, part) if p is not None else []
        runs = critique_runs_by_version(p) if p is not None else {part: {}}
        current = self.editor._desc_version if part == "descriptions" else self.editor._examples_version
        self.table.blockSignals(True)
        self.table.setRowCount(len(self._versions))
        for row, v in enumerate(reversed(self._versions)):  # newest on top
            ids = runs[part].get(v["version"], [])
            cells = [
                f"{v['version']}{'  (current)' if v['version'] == current else ''}",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(v["created"] or 0)),
                v["author"] or "",
                ", ".join(map(str, ids)) or "—",
            ]
            for col, text in enumerate(cells):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.table.blockSignals(False)
        if self._versions:
            self.empty_label.setText("Restoring saves the old text as a new version.")
            self.table.selectRow(0)
        else:
            self.empty_label.setText(
                "No saved versions yet: the program's default examples are in use."
                if part == "examples"
                else "No saved versions yet."
            )
            self.preview.clear()
        self._show_selected()

    def selected(self) -> dict | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self._versions[len(self._versions) - 1 - rows[0].row()]

    def select_version(self, version: int) -> None:
        for i, v in enumerate(reversed(self._versions)):
            if v["version"] == version:
                self.table.selectRow(i)
                return
        raise ValueError(f"No version {version} of the {self.part()}.")

    def _show_selected(self) -> None:
        v = self.selected()
        if v is None:
            self.restore_button.setEnabled(False)
            return
        self.preview.setHtml(content_html(self.part(), v["content"]))
        current = (
            self.editor._desc_version if self.part() == "descriptions" else self.editor._examples_version
        )
        self.restore_button.setEnabled(v["content"] is not None and v["version"] != current)

    def _restore_selected(self) -> None:
        v = self.selected()
        if v is not None and v["content"] is not None:
            self.editor.restore(self.part(), v["content"])
