"""The spec editor: typing and undo/redo, example commands, validation before saving, versions saved only
of what changed, the history with restore, and which critique run used a version."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from lvlmva_desktop.gui.jobs import JobRunner
from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.gui.spec_editor import SpecEditorPane, answer_problem, examples_json, spec_problems


@pytest.fixture
def session(explained_project):
    s = Session()
    s.open_project(explained_project)
    yield s
    s.close_project()


@pytest.fixture
def editor(qtbot, session):
    runner = JobRunner(lambda: session.root)
    ed = SpecEditorPane(session, runner)
    qtbot.addWidget(ed)
    ed.resize(700, 700)
    ed.show()
    qtbot.waitExposed(ed)
    return ed


def _critique_run(session) -> int:
    return session.project.db.execute("SELECT id FROM runs WHERE kind='critique'").fetchone()[0]


def test_typing_is_one_undo_step_per_field_and_undo_redo_restore_text(qtbot, editor):
    first, second = editor.classes[:2]
    e1, e2 = editor._desc_edits[first], editor._desc_edits[second]
    original = (e1.toPlainText(), e2.toPlainText())
    assert original[0] and not editor.has_unsaved_changes() and editor.dirty_label.text() == "Saved"

    e1.setFocus()
    e1.moveCursor(e1.textCursor().MoveOperation.End)
    qtbot.keyClicks(e1, " Rulers do not count.")
    assert editor.undo_stack.count() == 1  # one burst of typing, one command
    assert editor.has_unsaved_changes() and "Unsaved" in editor.dirty_label.text()
    e2.setFocus()
    e2.moveCursor(e2.textCursor().MoveOperation.End)
    qtbot.keyClicks(e2, " Hair is not a sign.")
    assert editor.undo_stack.count() == 2

    qtbot.keyClick(e2, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # the keyboard reaches the stack
    assert e2.toPlainText() == original[1] and editor.undo_stack.index() == 1
    editor.undo_action.trigger()
    assert e1.toPlainText() == original[0]
    assert not editor.has_unsaved_changes()  # back to the saved text: nothing to save
    editor.redo_action.trigger()
    editor.redo_action.trigger()
    assert e1.toPlainText() == original[0] + " Rulers do not count."
    assert editor.descriptions()[second] == original[1] + " Hair is not a sign."


def test_example_add_remove_and_reorder_are_undoable_commands(qtbot, editor):
    before = editor.examples()
    assert len(before) == 3 and editor.example_list.count() == 3
    editor.example_list.setCurrentRow(2)
    editor.add_button.click()
    assert editor.example_list.currentRow() == 3 and editor.examples()[3] == ("", "")
    qtbot.keyClicks(editor.example_text, "Segment 1 is a ruler.")
    qtbot.keyClicks(editor.example_answer, '{"segments": [{"segment": 1, "verdict": "spurious"}]}')
    assert editor.examples()[3] == (
        "Segment 1 is a ruler.",
        '{"segments": [{"segment": 1, "verdict": "spurious"}]}',
    )
    assert "segment 1 spurious" in editor.answer_reading.text()
    assert editor.undo_stack.count() == 3  # add, notes, answer
    editor.up_button.click()
    assert editor.examples()[2][0] == "Segment 1 is a ruler." and editor.example_list.currentRow() == 2
    editor.remove_button.click()
    assert len(editor.examples()) == 3 and "Segment 1 is a ruler." not in [t for t, _ in editor.examples()]
    editor.undo()  # remove
    editor.undo()  # move
    assert editor.examples()[3][0] == "Segment 1 is a ruler."
    while editor.undo_stack.canUndo():
        editor.undo()
    assert editor.examples() == before and not editor.has_unsaved_changes()


def test_validation_blocks_saving_in_words(qtbot, editor, session, artifacts_dir):
    p = session.project
    first = editor.classes[0]
    n_desc = len(p.class_descriptions_history())
    edit = editor._desc_edits[first]
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClick(edit, Qt.Key.Key_Delete)
    assert editor.save() is False
    assert f"The class '{first}' has no description." in editor.problems_label.text()
    assert editor.problems_label.isVisible() and len(p.class_descriptions_history()) == n_desc
    editor.undo()
    assert not editor.problems_label.isVisible()  # problems follow the form once shown

    editor.example_list.setCurrentRow(2)
    editor.add_button.click()
    assert editor.save() is False
    assert "Example 4 has no critic notes." in editor.problems_label.text()
    assert "Example 4 has no answer." in editor.problems_label.text()
    editor.grab().save(str(artifacts_dir / "spec_editor_problems_700.png"))
    assert p.prompt_template_history("judge_examples.json") == []  # nothing was written
    qtbot.keyClicks(editor.example_text, "Segment 2 is background.")
    qtbot.keyClicks(editor.example_answer, "segment 2: spurious")
    assert "is not valid JSON" in editor.problems_label.text()
    assert "is not valid JSON" in editor.answer_reading.text()
    editor.example_answer.setPlainText('{"answer": "spurious"}')
    assert "names no verdict per segment" in editor.problems_label.text()
    assert editor.save() is False
    editor.example_answer.setPlainText('{"segments": [{"segment": 2, "verdict": "spurious"}]}')
    assert not editor.problems_label.isVisible()
    assert editor.save() is True
    # only what changed got a version: the examples (after the defaults as version 1), not the descriptions
    hist = p.prompt_template_history("judge_examples.json")
    assert [r["version"] for r in hist] == [1, 2]
    assert json.loads(hist[-1]["text"])[-1]["text"] == "Segment 2 is background."
    assert len(p.class_descriptions_history()) == n_desc
    assert not editor.has_unsaved_changes() and editor.dirty_label.text() == "Saved"
    assert "Judge examples:</b> version 2" in editor.versions_label.text()


def test_save_history_restore_and_used_by_run(qtbot, editor, session, artifacts_dir):
    p = session.project
    run = _critique_run(session)
    v1, old = p.class_descriptions()
    assert f"version {v1} · used by critique run {run}" in editor.versions_label.text()
    first = editor.classes[0]
    edit = editor._desc_edits[first]
    edit.setFocus()
    edit.moveCursor(edit.textCursor().MoveOperation.End)
    qtbot.keyClicks(edit, " Also: a coloured patch never decides the class.")
    editor.grab().save(str(artifacts_dir / "spec_editor_descriptions_700.png"))
    with qtbot.waitSignal(session.changed, check_params_cb=lambda t: t == "descriptions"):
        assert editor.save()
    v2, new = p.class_descriptions()
    assert v2 == v1 + 1 and new[first].endswith("never decides the class.")
    assert f"Descriptions:</b> version {v2}<br>" in editor.versions_label.text()  # no run used it yet

    editor.tabs.setCurrentWidget(editor.history)
    h = editor.history
    assert h.table.rowCount() == 2
    assert h.table.item(0, 0).text() == f"{v2}  (current)" and h.table.item(1, 3).text() == str(run)
    assert h.table.item(0, 2).text()  # the author
    assert not h.restore_button.isEnabled()  # the current version is selected
    h.select_version(v1)
    assert old[first] in h.preview.toPlainText() and h.restore_button.isEnabled()
    editor.grab().save(str(artifacts_dir / "spec_editor_history_700.png"))
    h.restore_button.click()
    v3, restored = p.class_descriptions()
    assert v3 == v2 + 1 and restored == old
    assert editor.descriptions() == old and not editor.has_unsaved_changes()
    assert h.table.rowCount() == 3 and h.table.item(0, 0).text() == f"{v3}  (current)"
    editor.undo()  # the restore is an edit of the form: undo brings back what was there, unsaved
    assert editor.descriptions() == new and editor.has_unsaved_changes()

    h.select_part("examples")
    assert h.table.rowCount() == 0 and "default examples are in use" in h.empty_label.text()


def test_external_saves_reload_a_clean_editor_and_project_switches(qtbot, editor, session):
    p = session.project
    first = editor.classes[0]
    _, desc = p.class_descriptions()
    p.set_class_descriptions({**desc, first: "Saved from elsewhere."})
    session.notify("descriptions")
    assert editor._desc_edits[first].toPlainText() == "Saved from elsewhere."
    assert not editor.has_unsaved_changes()
    # with unsaved edits, the form keeps them and compares them with the newer saved version
    editor.tabs.setCurrentIndex(1)
    editor.example_list.setCurrentRow(0)
    editor.example_text.moveCursor(editor.example_text.textCursor().MoveOperation.End)
    qtbot.keyClicks(editor.example_text, " (edited here)")
    from lvlmva_desktop.lvlm.prompts import TemplateSet

    TemplateSet.for_project(p)
    p.save_prompt_template("judge_examples.json", examples_json([("Elsewhere.", '{"1": "relevant"}')]))
    session.notify("templates")
    assert editor.examples()[0][0].endswith("(edited here)") and editor.has_unsaved_changes()
    assert "Judge examples:</b> version 2" in editor.versions_label.text()
    session.close_project()
    assert editor.stack.currentIndex() == 0 and not editor.has_unsaved_changes()


def test_screenshots_at_dock_and_large_sizes(qtbot, editor, artifacts_dir):
    editor.tabs.setCurrentIndex(1)
    editor.example_list.setCurrentRow(0)
    editor.grab().save(str(artifacts_dir / "spec_editor_examples_700.png"))
    editor.resize(1200, 900)
    editor.grab().save(str(artifacts_dir / "spec_editor_examples_1200.png"))
    editor.tabs.setCurrentIndex(0)
    editor.grab().save(str(artifacts_dir / "spec_editor_descriptions_1200.png"))
    editor.resize(460, 600)
    editor.grab().save(str(artifacts_dir / "spec_editor_descriptions_460.png"))


def test_checks_are_the_same_outside_the_form():
    assert answer_problem('{"segments": [{"segment": 1, "verdict": "relevant"}]}') is None
    assert "not valid JSON" in answer_problem("{'segments': []}")
    assert spec_problems(["a", "b"], {"a": "x", "b": " "}, [("t", '{"1": "spurious"}')]) == [
        "The class 'b' has no description."
    ]
    text = examples_json([("notes", '{"1": "spurious"}')])
    assert json.loads(text) == [{"text": "notes", "answer": '{"1": "spurious"}'}]


@pytest.mark.parametrize("how", ["button", "ctrl+s"])
def test_save_by_the_button_and_by_ctrl_s_stores_a_version(qtbot, editor, session, how):
    """The Save button's clicked(bool) once reached save(parts) as False: every click failed with
    "argument of type 'bool' is not iterable" while tests called save() directly."""
    p = session.project
    v1, _ = p.class_descriptions()
    first = editor.classes[0]
    edit = editor._desc_edits[first]
    edit.setFocus()
    edit.moveCursor(edit.textCursor().MoveOperation.End)
    qtbot.keyClicks(edit, " Judged by the lesion only.")
    errors = []
    session.error.connect(errors.append)
    if how == "button":
        qtbot.mouseClick(editor.save_button, Qt.MouseButton.LeftButton)
    else:
        qtbot.keyClick(edit, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert errors == []
    v2, new = p.class_descriptions()
    assert v2 == v1 + 1 and new[first].endswith("Judged by the lesion only.")
    assert not editor.has_unsaved_changes()
