"""The spec editor's model: the checks before saving, and the undo commands of the form.

Qt-free checks (``spec_problems``, ``answer_problem``) decide whether the class descriptions and the judge's
examples can be saved; the undo commands change the editor's form and know nothing of the project.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING

from PySide6.QtGui import QUndoCommand

from lvlmva_desktop.lvlm.parsing import parse_verdicts
from lvlmva_desktop.lvlm.prompts import PromptError, validate_template

if TYPE_CHECKING:
    from lvlmva_desktop.gui.spec_editor import SpecEditorPane

EXAMPLES = "judge_examples.json"
BURST_S = 2.0  # typing in one field with pauses shorter than this is one undo step
_uids = count(1)


@dataclass
class Example:
    text: str = ""
    answer: str = ""
    uid: int = field(default_factory=lambda: next(_uids))


def examples_json(examples: list[tuple[str, str]]) -> str:
    """The judge_examples.json text for these (text, answer) pairs, as the program ships it."""
    return json.dumps([{"text": t, "answer": a} for t, a in examples], indent=2, ensure_ascii=False) + "\n"


def answer_problem(answer: str) -> str | None:
    """Why an example's answer is not a verdict JSON the judge could imitate; None if it is one."""
    try:
        json.loads(answer)
    except json.JSONDecodeError as e:
        return f"is not valid JSON ({e.msg}, at character {e.pos + 1})"
    if parse_verdicts(answer, 64).method != "json" or not parse_verdicts(answer, 64).n_found:
        return (
            'names no verdict per segment; write e.g. {"segments": [{"segment": 1, "verdict": "relevant"}]}'
        )
    return None


def answer_reading(answer: str) -> str:
    """How the program reads an answer, e.g. '1 relevant, 2 spurious' (shown under the answer box)."""
    r = parse_verdicts(answer, 64)
    return ", ".join(f"segment {i + 1} {v}" for i, v in enumerate(r.verdicts) if v is not None)


def spec_problems(
    classes: list[str], descriptions: dict[str, str], examples: list[tuple[str, str]]
) -> list[str]:
    """Everything that keeps the specification from being saved, in words (empty: it can be saved)."""
    out = [f"The class '{c}' has no description." for c in classes if not descriptions.get(c, "").strip()]
    for i, (text, answer) in enumerate(examples, 1):
        if not text.strip():
            out.append(f"Example {i} has no critic notes.")
        if not answer.strip():
            out.append(f"Example {i} has no answer.")
        elif problem := answer_problem(answer):
            out.append(f"The answer of example {i} {problem}.")
    if not out:
        try:
            validate_template(EXAMPLES, examples_json(examples))
        except PromptError as e:
            out.append(str(e))
    return out


# -- undo commands --------------------------------------------------------------------------------------
class TextCommand(QUndoCommand):
    """One burst of typing in one field."""

    def __init__(self, editor: SpecEditorPane, key: tuple, old: str, new: str) -> None:
        super().__init__(f"Edit {editor.field_title(key)}")
        self.editor, self.key, self.old, self.new = editor, key, old, new
        self.last = time.monotonic()
        self.pushed = False

    def id(self) -> int:
        return 1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt's name
        if not isinstance(other, TextCommand) or other.key != self.key or self.editor._burst != self.key:
            return False
        if other.last - self.last > BURST_S:
            return False
        self.new, self.last = other.new, other.last
        return True

    def redo(self) -> None:
        again, self.pushed = self.pushed, True
        if again:  # a redo, not the push: typing after it starts a new burst
            self.editor._burst = None
        self.editor._set_field(self.key, self.new, reveal=again)

    def undo(self) -> None:
        self.editor._burst = None
        self.editor._set_field(self.key, self.old, reveal=True)


class ExamplesCommand(QUndoCommand):
    """Add, remove, move or replace examples: the list before and after, and which row to select."""

    def __init__(
        self,
        editor: SpecEditorPane,
        title: str,
        before: list[Example],
        after: list[Example],
        row: int,
        undo_row: int | None = None,
    ) -> None:
        super().__init__(title)
        self.editor, self.before, self.after, self.row = editor, list(before), list(after), row
        self.undo_row = min(row, len(before) - 1) if undo_row is None else undo_row

    def redo(self) -> None:
        self.editor._set_examples(self.after, self.row)

    def undo(self) -> None:
        self.editor.tabs.setCurrentIndex(1)
        self.editor._set_examples(self.before, self.undo_row)


class DescriptionsCommand(QUndoCommand):
    def __init__(self, editor: SpecEditorPane, title: str, before: dict, after: dict) -> None:
        super().__init__(title)
        self.editor, self.before, self.after = editor, dict(before), dict(after)

    def redo(self) -> None:
        for c, t in self.after.items():
            self.editor._set_field(("desc", c), t)

    def undo(self) -> None:
        for c, t in self.before.items():
            self.editor._set_field(("desc", c), t, reveal=True)
