"""The expert's specification: what each class looks like, and the judge's worked examples.

Both are versioned in the project. The editor is a form (a text box per class; a list of examples with
their critic notes and verdict answer) with undo/redo; Save checks everything first and stores a new
version only of what changed. The history tab lists the versions, shows an old one and restores it as a
new version. Every critique run records which versions it used, and the editor says so.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QAction, QColor, QFontDatabase, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.gui.spec_history import HistoryView, critique_runs_by_version
from lvlmva_desktop.gui.spec_model import (
    EXAMPLES,
    DescriptionsCommand,
    Example,
    ExamplesCommand,
    TextCommand,
    answer_problem,
    answer_reading,
    examples_json,
    spec_problems,
)
from lvlmva_desktop.lvlm.prompts import PromptError, default_texts, parse_examples

log = logging.getLogger(__name__)


def _plain_edit(mono: bool = False, lines: int = 0) -> QPlainTextEdit:
    """A wrapping text box without its own undo (the editor's stack keeps every field's history);
    ``lines``: a fixed height of that many lines (the class descriptions), else it stretches."""
    e = QPlainTextEdit()
    e.setUndoRedoEnabled(False)
    e.setTabChangesFocus(True)
    e.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    if mono:
        e.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
    if lines:
        e.setFixedHeight(e.fontMetrics().lineSpacing() * lines + 14)
    else:
        e.setMinimumHeight(e.fontMetrics().lineSpacing() * 3 + 14)
    return e


class SpecEditorPane(QWidget):
    """Class descriptions and judge examples, edited as a form with undo/redo and saved as versions."""

    dirtyChanged = Signal(bool)

    def __init__(self, session, runner=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.runner = runner
        self.undo_stack = QUndoStack(self)
        self._burst: tuple | None = None
        self._applying = False
        self._saving = False
        self._show_problems = False
        self._dirty = False
        self.classes: list[str] = []
        self._desc: dict[str, str] = {}
        self._saved_desc: dict[str, str] = {}
        self._desc_version: int | None = None
        self._examples: list[Example] = []
        self._saved_examples: list[tuple[str, str]] = []
        self._examples_version = 0
        self._desc_edits: dict[str, QPlainTextEdit] = {}
        self.setMinimumSize(420, 360)
        self._build()
        session.changed.connect(self._on_changed)
        self.reload()

    # -- layout ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        # no shortcuts here: the window's Edit menu owns Ctrl+Z (it undoes this stack while the editor has
        # the focus) and the text boxes catch the keys themselves (see eventFilter)
        self.undo_action = QAction("Undo", self)
        self.undo_action.triggered.connect(self.undo)
        self.redo_action = QAction("Redo", self)
        self.redo_action.triggered.connect(self.redo)
        self.save_action = QAction("Save", self)
        self.save_action.setShortcut(QKeySequence.StandardKey.Save)
        self.save_action.triggered.connect(lambda _checked=False: self.save())  # not save(checked)
        self.save_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.addAction(self.save_action)
        self.undo_stack.canUndoChanged.connect(self.undo_action.setEnabled)
        self.undo_stack.canRedoChanged.connect(self.redo_action.setEnabled)
        self.undo_stack.undoTextChanged.connect(lambda t: self.undo_action.setToolTip(f"Undo {t}".strip()))
        self.undo_stack.redoTextChanged.connect(lambda t: self.redo_action.setToolTip(f"Redo {t}".strip()))
        self.undo_action.setEnabled(False)
        self.redo_action.setEnabled(False)

        self.versions_label = QLabel()
        self.versions_label.setWordWrap(True)
        self.versions_label.setTextFormat(Qt.TextFormat.RichText)
        bar = QHBoxLayout()
        self.dirty_label = QLabel()
        bar.addWidget(self.dirty_label, 1)
        for a in (self.undo_action, self.redo_action):
            b = QToolButton()
            b.setDefaultAction(a)
            bar.addWidget(b)
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(lambda _checked=False: self.save())
        bar.addWidget(self.save_button)

        self.problems_label = QLabel()
        self.problems_label.setWordWrap(True)
        self.problems_label.setStyleSheet("color:#d0382b")
        self.problems_label.hide()

        self.tabs = QTabWidget()
        self.tabs.addTab(self._descriptions_tab(), "Class descriptions")
        self.tabs.addTab(self._examples_tab(), "Judge examples")
        self.history = HistoryView(self)
        self.tabs.addTab(self.history, "History")

        editor = QWidget()
        lay = QVBoxLayout(editor)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.versions_label)
        lay.addLayout(bar)
        lay.addWidget(self.problems_label)
        lay.addWidget(self.tabs, 1)
        self.empty_label = QLabel("Open a project to edit its class descriptions and the judge's examples.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty_label)
        self.stack.addWidget(editor)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.stack)

    def _descriptions_tab(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        hint = QLabel(
            "Describe what each class looks like and what must not decide it. The critic reads the "
            "description of an image's class with every image."
        )
        hint.setWordWrap(True)
        hint.setStyleSheet("color:#808080")
        lay.addWidget(hint)
        self.desc_area = QScrollArea()
        self.desc_area.setWidgetResizable(True)
        self.desc_area.setFrameShape(QScrollArea.Shape.NoFrame)
        self.desc_form = QWidget()
        self.desc_layout = QVBoxLayout(self.desc_form)
        self.desc_area.setWidget(self.desc_form)
        lay.addWidget(self.desc_area, 1)
        return page

    def _examples_tab(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        hint = QLabel(
            "Worked examples teach the judge how to turn the critic's notes into one verdict per segment."
        )
        hint.setWordWrap(True)
        hint.setStyleSheet("color:#808080")
        lay.addWidget(hint)
        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.example_list = QListWidget()
        self.example_list.setWordWrap(True)
        self.example_list.currentRowChanged.connect(self._show_example)
        ll.addWidget(self.example_list, 1)
        buttons = QHBoxLayout()
        self.add_button = QPushButton("Add")
        self.remove_button = QPushButton("Remove")
        self.up_button = QPushButton("↑")
        self.down_button = QPushButton("↓")
        self.up_button.setToolTip("Move the example up")
        self.down_button.setToolTip("Move the example down")
        for b in (self.up_button, self.down_button):
            b.setFixedWidth(32)
        self.add_button.clicked.connect(self.add_example)
        self.remove_button.clicked.connect(lambda: self.remove_example(self.example_list.currentRow()))
        self.up_button.clicked.connect(lambda: self.move_example(self.example_list.currentRow(), -1))
        self.down_button.clicked.connect(lambda: self.move_example(self.example_list.currentRow(), 1))
        for b in (self.add_button, self.remove_button, self.up_button, self.down_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        ll.addLayout(buttons)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(QLabel("The critic's notes"))
        self.example_text = _plain_edit()
        rl.addWidget(self.example_text, 3)
        rl.addWidget(QLabel("The judge's answer (verdict JSON)"))
        self.example_answer = _plain_edit(mono=True)
        rl.addWidget(self.example_answer, 2)
        self.answer_reading = QLabel()
        self.answer_reading.setWordWrap(True)
        rl.addWidget(self.answer_reading)
        self.example_text.textChanged.connect(lambda: self._typed(self.example_text, "text"))
        self.example_answer.textChanged.connect(lambda: self._typed(self.example_answer, "answer"))
        for e in (self.example_text, self.example_answer):
            e.installEventFilter(self)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([240, 400])
        lay.addWidget(split, 1)
        return page

    # -- loading --------------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read both parts from the project; the undo history starts afresh."""
        p = self.session.project
        self.undo_stack.clear()
        self._burst = None
        self._show_problems = False
        if p is None:
            self.stack.setCurrentIndex(0)
            self.classes, self._desc, self._saved_desc, self._examples, self._saved_examples = (
                [],
                {},
                {},
                [],
                [],
            )
            self._update_state()
            return
        self.stack.setCurrentIndex(1)
        self.classes = p.classes
        self._load_descriptions(p)
        self._load_examples(p)
        self._update_state()
        self.history.refresh()

    def _load_descriptions(self, p) -> None:
        self._desc_version, saved = p.class_descriptions()
        self._saved_desc = {c: saved.get(c, "") for c in self.classes}
        self._desc = dict(self._saved_desc)
        while self.desc_layout.count():
            w = self.desc_layout.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self._desc_edits = {}
        for c in self.classes:
            label = QLabel(f"<b>{c}</b>")
            edit = _plain_edit(lines=5)
            edit.setPlaceholderText(f"What an image of '{c}' shows, and what must not decide it")
            edit.setPlainText(self._desc[c])
            edit.textChanged.connect(lambda c=c, e=edit: self._typed(e, c))
            edit.installEventFilter(self)
            self.desc_layout.addWidget(label)
            self.desc_layout.addWidget(edit)
            self._desc_edits[c] = edit
        self.desc_layout.addStretch(1)

    def _load_examples(self, p) -> None:
        row = p.prompt_templates().get(EXAMPLES)
        text, self._examples_version = (
            (row["text"], row["version"]) if row else (default_texts()[EXAMPLES], 0)
        )
        try:
            pairs = [(e["text"], e["answer"]) for e in parse_examples(text)]
        except PromptError as e:
            log.warning("the project's judge examples cannot be read: %s", e)
            pairs = []
        self._saved_examples = pairs
        self._set_examples([Example(t, a) for t, a in pairs], 0)

    # -- the form's state -----------------------------------------------------------------------------
    def descriptions(self) -> dict[str, str]:
        return dict(self._desc)

    def examples(self) -> list[tuple[str, str]]:
        return [(e.text, e.answer) for e in self._examples]

    def descriptions_dirty(self) -> bool:
        return self._desc != self._saved_desc

    def examples_dirty(self) -> bool:
        return self.examples() != self._saved_examples

    def has_unsaved_changes(self) -> bool:
        """Asked by the main window before it closes the project or quits."""
        return self.descriptions_dirty() or self.examples_dirty()

    def problems(self) -> list[str]:
        return spec_problems(self.classes, self._desc, self.examples())

    def field_title(self, key: tuple) -> str:
        if key[0] == "desc":
            return f"description of '{key[1]}'"
        idx = next((i for i, e in enumerate(self._examples) if e.uid == key[1]), 0)
        return f"{'notes' if key[2] == 'text' else 'answer'} of example {idx + 1}"

    def _typed(self, edit: QPlainTextEdit, which: str) -> None:
        """A text box changed by the user: one undo command, merged with the rest of this burst."""
        if self._applying:
            return
        if edit in self._desc_edits.values():
            key = ("desc", which)
            old = self._desc.get(which, "")
        else:
            ex = self._current_example()
            if ex is None:
                return
            key = ("ex", ex.uid, which)
            old = getattr(ex, which)
        new = edit.toPlainText()
        if new != old:
            self.undo_stack.push(TextCommand(self, key, old, new))
            self._burst = key

    def _set_field(self, key: tuple, value: str, reveal: bool = False) -> None:
        if key[0] == "desc":
            self._desc[key[1]] = value
            edit = self._desc_edits.get(key[1])
            if reveal and edit is not None:
                self.tabs.setCurrentIndex(0)
                self.desc_area.ensureWidgetVisible(edit)
        else:
            idx = next((i for i, e in enumerate(self._examples) if e.uid == key[1]), None)
            if idx is None:
                return
            setattr(self._examples[idx], key[2], value)
            if self.example_list.currentRow() != idx:
                self.example_list.setCurrentRow(idx)
            edit = self.example_text if key[2] == "text" else self.example_answer
            self._refresh_list_item(idx)
            if reveal:
                self.tabs.setCurrentIndex(1)
        if edit is not None and edit.toPlainText() != value:
            self._applying = True
            try:
                edit.setPlainText(value)
                edit.moveCursor(edit.textCursor().MoveOperation.End)
            finally:
                self._applying = False
        self._update_state()

    def _set_examples(self, examples: list[Example], row: int) -> None:
        self._examples = list(examples)
        self._burst = None
        self._applying = True
        try:
            self.example_list.clear()
            for i in range(len(self._examples)):
                self.example_list.addItem("")
                self._refresh_list_item(i)
        finally:
            self._applying = False
        self.example_list.setCurrentRow(max(-1, min(row, len(self._examples) - 1)))
        self._show_example(self.example_list.currentRow())
        self._update_state()

    def _refresh_list_item(self, i: int) -> None:
        ex = self._examples[i]
        first = ex.text.strip().splitlines()[0] if ex.text.strip() else "(no notes yet)"
        item = self.example_list.item(i)
        item.setText(f"{i + 1}. {first[:70]}{'…' if len(first) > 70 else ''}")
        bad = not ex.text.strip() or not ex.answer.strip() or answer_problem(ex.answer) is not None
        item.setForeground(QColor("#d0382b") if bad else self.palette().text().color())

    def _current_example(self) -> Example | None:
        row = self.example_list.currentRow()
        return self._examples[row] if 0 <= row < len(self._examples) else None

    def _show_example(self, row: int) -> None:
        ex = self._examples[row] if 0 <= row < len(self._examples) else None
        self._burst = None
        self._applying = True
        try:
            self.example_text.setPlainText(ex.text if ex else "")
            self.example_answer.setPlainText(ex.answer if ex else "")
        finally:
            self._applying = False
        for w in (self.example_text, self.example_answer, self.remove_button):
            w.setEnabled(ex is not None)
        self.up_button.setEnabled(ex is not None and row > 0)
        self.down_button.setEnabled(ex is not None and row < len(self._examples) - 1)
        self._update_reading()

    def _update_reading(self) -> None:
        ex = self._current_example()
        if ex is None or not ex.answer.strip():
            self.answer_reading.setText("")
            return
        problem = answer_problem(ex.answer)
        if problem:
            self.answer_reading.setStyleSheet("color:#d0382b")
            self.answer_reading.setText(f"This answer {problem}.")
        else:
            self.answer_reading.setStyleSheet("color:#2e8b47")
            self.answer_reading.setText(f"Reads as: {answer_reading(ex.answer)}")

    # -- example commands -----------------------------------------------------------------------------
    def add_example(self) -> None:
        row = self.example_list.currentRow() + 1 if self._examples else 0
        after = [*self._examples[:row], Example(), *self._examples[row:]]
        self.undo_stack.push(ExamplesCommand(self, "Add an example", self._examples, after, row))
        self.example_text.setFocus()

    def remove_example(self, row: int) -> None:
        if 0 <= row < len(self._examples):
            after = self._examples[:row] + self._examples[row + 1 :]
            self.undo_stack.push(
                ExamplesCommand(self, f"Remove example {row + 1}", self._examples, after, row)
            )

    def move_example(self, row: int, step: int) -> None:
        to = row + step
        if 0 <= row < len(self._examples) and 0 <= to < len(self._examples):
            after = list(self._examples)
            after[row], after[to] = after[to], after[row]
            self.undo_stack.push(
                ExamplesCommand(self, f"Move example {row + 1}", self._examples, after, to, row)
            )

    def undo(self) -> None:
        self._burst = None
        self.undo_stack.undo()

    def redo(self) -> None:
        self._burst = None
        self.undo_stack.redo()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.FocusOut:
            self._burst = None  # leaving a field ends its typing burst
        elif event.type() == QEvent.Type.ShortcutOverride and (
            event.matches(QKeySequence.StandardKey.Undo) or event.matches(QKeySequence.StandardKey.Redo)
        ):
            event.accept()  # the key comes to the text box (below), not to a window-wide shortcut
            return True
        elif event.type() == QEvent.Type.KeyPress:
            if event.matches(QKeySequence.StandardKey.Undo):
                self.undo()
                return True
            if event.matches(QKeySequence.StandardKey.Redo):
                self.redo()
                return True
        return super().eventFilter(obj, event)

    # -- state ----------------------------------------------------------------------------------------
    def _update_state(self) -> None:
        dirty = self.has_unsaved_changes()
        self.dirty_label.setText("● Unsaved changes" if dirty else "Saved")
        self.dirty_label.setStyleSheet("color:#c06000; font-weight:bold" if dirty else "color:#2e8b47")
        self.save_button.setEnabled(dirty)
        self.save_action.setEnabled(dirty)
        if dirty != self._dirty:
            self._dirty = dirty
            self.dirtyChanged.emit(dirty)
        self._update_reading()
        if self._show_problems:
            self._show_problem_list(self.problems())
        self._update_versions()

    def _show_problem_list(self, problems: list[str]) -> None:
        if not problems:
            self.problems_label.hide()
            self._show_problems = False
            return
        shown = problems[:6] + ([f"… and {len(problems) - 6} more."] if len(problems) > 6 else [])
        self.problems_label.setText("Cannot save yet:\n• " + "\n• ".join(shown))
        self.problems_label.show()

    def _update_versions(self) -> None:
        p = self.session.project
        if p is None:
            self.versions_label.setText("")
            return
        runs = critique_runs_by_version(p)

        def used(part: str, v) -> str:
            ids = runs[part].get(v, [])
            return (
                f" · used by critique run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
                if ids
                else ""
            )

        d = f"version {self._desc_version}" if self._desc_version else "not saved yet"
        e = f"version {self._examples_version}" if self._examples_version else "program default"
        self.versions_label.setText(
            f"<b>Descriptions:</b> {d}{used('descriptions', self._desc_version)}<br>"
            f"<b>Judge examples:</b> {e}{used('examples', self._examples_version)}"
        )

    # -- saving ---------------------------------------------------------------------------------------
    def save(self, parts: tuple[str, ...] = ("descriptions", "examples")) -> bool:
        """Check the form and store a new version of each changed part; False (and why) when it cannot."""
        p = self.session.project
        if p is None or not self.has_unsaved_changes():
            return p is not None
        problems = self.problems()
        if problems:
            self._show_problems = True
            self._show_problem_list(problems)
            if not any(x.startswith("The class") for x in problems):
                self.tabs.setCurrentIndex(1)  # show where the first problem is
            elif self.tabs.currentIndex() != 0:
                self.tabs.setCurrentIndex(0)
            return False
        topics = []
        self._saving = True
        try:
            if "descriptions" in parts and self.descriptions_dirty():
                self._desc_version = p.set_class_descriptions(self._desc)
                self._saved_desc = dict(self._desc)
                topics.append("descriptions")
            if "examples" in parts and self.examples_dirty():
                from lvlmva_desktop.lvlm.prompts import TemplateSet

                TemplateSet.for_project(p)  # the program's defaults become version 1 first
                self._examples_version = p.save_prompt_template(EXAMPLES, examples_json(self.examples()))
                self._saved_examples = self.examples()
                topics.append("templates")
            if topics:
                self.session.notify(*topics)
        except Exception as e:  # noqa: BLE001 - told in words through the session
            self.session.report(e, "Saving the specification")
            return False
        finally:
            self._saving = False
        if not self.has_unsaved_changes():
            self.undo_stack.setClean()
        self._update_state()
        self.history.refresh()
        return True

    def restore(self, part: str, content) -> bool:
        """Make an old version current again: an undoable edit of the form, saved as a new version."""
        if part == "descriptions":
            after = {c: content.get(c, "") for c in self.classes}
            self.undo_stack.push(DescriptionsCommand(self, "Restore descriptions", self._desc, after))
        else:
            new = [Example(t, a) for t, a in content]
            self.undo_stack.push(ExamplesCommand(self, "Restore examples", self._examples, new, 0))
        return self.save((part,))

    def _on_changed(self, topic: str) -> None:
        p = self.session.project
        if topic == "project":
            self.reload()
        elif topic in ("descriptions", "templates") and not self._saving and p is not None:
            self._saved_elsewhere(p, topic)
            self._update_state()
            self.history.refresh()
        elif topic == "critique":
            self._update_versions()
            self.history.refresh()

    def _saved_elsewhere(self, p, topic: str) -> None:
        """A version saved outside this editor becomes the baseline; the form follows it unless it holds
        unsaved edits (those stay, and Save stores them on top)."""
        if topic == "descriptions":
            version, saved = p.class_descriptions()
            if version == self._desc_version:
                return
            clean = not self.descriptions_dirty()
            self._desc_version, self._saved_desc = version, {c: saved.get(c, "") for c in self.classes}
            if clean:
                self._load_descriptions(p)
                self.undo_stack.clear()
            return
        row = p.prompt_templates().get(EXAMPLES)
        if (row["version"] if row else 0) == self._examples_version:
            return  # another template changed
        clean, current = not self.examples_dirty(), self.examples()
        self._load_examples(p)
        if clean:
            self.undo_stack.clear()
        else:
            self._set_examples([Example(t, a) for t, a in current], 0)


SpecEditor = SpecEditorPane
