"""Prompt templates: shipped defaults render, projects keep versioned copies, hashes change with edits."""

import pytest

from lvlmva_desktop.core.store.project import Project
from lvlmva_desktop.lvlm.prompts import TEMPLATE_NAMES, PromptError, TemplateSet, validate_template


def _segs():
    return [
        {"number": 1, "evidence": 0.7, "where": "the centre"},
        {"number": 2, "evidence": 0.3, "where": "the top left"},
    ]


def test_defaults_render_with_the_six_steps_and_examples():
    ts = TemplateSet.defaults()
    critic = ts.render(
        "critic.j2", class_name="benign", class_description="round, even colour", segments=_segs()
    )
    for step in range(1, 7):
        assert f"Step {step}" in critic
    assert '"benign"' in critic and "round, even colour" in critic and "Segment 2: 30%" in critic
    judge = ts.render(
        "judge.j2", critic_text="Segment 1: relevant", n_segments=2, examples=ts.judge_examples()
    )
    assert judge.count("Notes:") == len(ts.judge_examples()) + 1
    assert judge.rstrip().endswith("Answer:")
    one = ts.render("one_call.j2", class_name="b", class_description="", segments=_segs())
    assert "Step 6" in one and "JSON" in one and "(no description given)" in one
    strict = ts.render("judge_strict.j2", critic_text="x", n_segments=3)
    assert '{"segment": 3, "verdict": "VERDICT"}' in strict


def test_project_copy_is_versioned_and_hashes_follow_edits(tmp_path):
    p = Project.create(tmp_path / "p", "p", ["a", "b"], (8, 8), 1)
    ts = TemplateSet.for_project(p)
    assert set(ts.versions) == set(TEMPLATE_NAMES) and set(ts.versions.values()) == {1}
    before = ts.hashes("critic")
    edited = ts.texts["critic.j2"] + "\nBe brief."
    validate_template("critic.j2", edited)
    assert p.save_prompt_template("critic.j2", edited) == 2
    assert p.save_prompt_template("critic.j2", edited) == 2  # unchanged text: same version
    ts2 = TemplateSet.for_project(p)
    assert ts2.versions["critic.j2"] == 2
    assert ts2.hashes("critic") != before
    assert ts2.hashes("judge") == ts.hashes("judge")
    assert [r["version"] for r in p.prompt_template_history("critic.j2")] == [1, 2]
    p.close()


def test_broken_templates_are_refused_in_words():
    with pytest.raises(PromptError, match="critic.j2"):
        validate_template("critic.j2", "{{ class_name ")
    with pytest.raises(PromptError, match="critic.j2"):
        validate_template("critic.j2", "{{ no_such_variable }}")
    with pytest.raises(PromptError, match="example 1 has no answer"):
        validate_template("judge_examples.json", '[{"text": "t", "answer": ""}]')
    with pytest.raises(PromptError, match="Unknown template"):
        validate_template("other.j2", "x")


def test_templates_run_in_a_sandbox():
    texts = dict(TemplateSet.defaults().texts)
    texts["critic.j2"] = "{{ class_name.__class__.__mro__[1].__subclasses__() }}"
    ts = TemplateSet(texts)
    with pytest.raises(PromptError):
        ts.render("critic.j2", class_name="x", class_description="", segments=[])


def test_a_variable_the_call_site_does_not_pass_is_refused():
    judge = TemplateSet.defaults().texts["judge.j2"] + "{{ class_name }}"
    with pytest.raises(PromptError, match="judge.j2"):
        validate_template("judge.j2", judge)
    with pytest.raises(PromptError):
        validate_template("critic.j2", TemplateSet.defaults().texts["critic.j2"] + "{{ n_segments }}")
