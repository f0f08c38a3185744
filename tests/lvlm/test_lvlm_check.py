"""The LVLM check (lvlm/check.py, `lvlmva lvlm-check`): one request of each kind the critique sends, on real
tiny model folders; a folder that cannot take one of them is refused in words before any work, and a model
that answers nothing does not pass silently."""

from __future__ import annotations

import json
import shutil

import pytest
from fixtures.tiny_lvlm import family_parts, sample_image

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState
from lvlmva_desktop.lvlm.backend import GenerationSettings, LVLMError, text_message, user_message
from lvlmva_desktop.lvlm.check import CALL_KINDS, check_backend, probe_request
from lvlmva_desktop.lvlm.critic import CriticSettings, LVLMCritic
from lvlmva_desktop.lvlm.local import LocalBackend
from lvlmva_desktop.selftest_lvlm import save_tiny_lvlm

KINDS = ["critic", "judge", "summary", "chat"]

# A real template mechanism (transformers' raise_exception): a model that takes one image per conversation.
ONE_IMAGE = (
    "{% set n = namespace(images=0) %}{% for message in messages %}{% if message['content'] is not string %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{% set n.images = n.images + 1 %}"
    "{% endif %}{% endfor %}{% endif %}{% endfor %}"
    "{% if n.images > 1 %}{{ raise_exception('This model takes at most one image per conversation.') }}{% endif %}"
)
# ... and one whose template refuses a system turn (several published templates do)
NO_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
)
# ... and one whose template refuses a user turn without an image
IMAGE_EVERY_TURN = (
    "{% for message in messages %}{% if message['role'] == 'user' and (message['content'] is string or "
    "message['content'] | selectattr('type', 'equalto', 'image') | list | length == 0) %}"
    "{{ raise_exception('Every user message needs an image.') }}{% endif %}{% endfor %}"
)


def _with_template(src, dst, prefix: str):
    """A copy of a tiny folder whose chat template starts with ``prefix``."""
    shutil.copytree(src, dst)
    path = dst / "chat_template.jinja"
    path.write_text(prefix + path.read_text(encoding="utf-8"), encoding="utf-8")
    return dst


def test_every_kind_of_request_is_tried_and_reported(tiny_lvlm_dirs, capsys):
    b = LocalBackend(tiny_lvlm_dirs["qwen2_5_vl"], device="cpu")
    try:
        seen = []
        rep = check_backend(b, TaskState(on_progress=lambda f, m: seen.append(m)))
    finally:
        b.close()
    assert rep.ok, rep.problem
    assert [c["kind"] for c in rep.calls] == KINDS == [k for k, _ in CALL_KINDS]
    assert all(c["ok"] and c["output"] and c["seconds"] > 0 and not c["problem"] for c in rep.calls)
    assert rep.identity["model_type"] == "qwen2_5_vl" and rep.test_output
    assert any("critic's request" in m for m in seen) and any("chat turn" in m for m in seen)
    json.dumps(rep.to_dict())

    assert main(["lvlm-check", "--model-dir", str(tiny_lvlm_dirs["qwen2_5_vl"])]) == 0
    out = capsys.readouterr().out
    for kind in KINDS:
        assert f"\n{kind:8s} ok" in out
    assert "text-only requests" in out and "health check passed: every kind of request works" in out


def test_the_check_can_be_stopped_between_requests(tiny_lvlm_dirs):
    b = LocalBackend(tiny_lvlm_dirs["qwen2_5_vl"], device="cpu")
    tried = []

    def on_progress(fraction, message):
        tried.append(message)
        if "judge" in message:
            state.cancel()

    state = TaskState(on_progress=on_progress)
    try:
        with pytest.raises(Cancelled):
            check_backend(b, state)
    finally:
        b.close()
    assert not any("summary" in m for m in tried)  # stopped before the next request


def test_a_model_that_takes_one_image_is_refused_before_any_work(tiny_lvlm_dirs, tmp_path, capsys):
    folder = _with_template(tiny_lvlm_dirs["llava"], tmp_path / "one-image", ONE_IMAGE)
    b = LocalBackend(folder, device="cpu")
    try:
        # the old check's single test question (one image) still passes ...
        assert b.health_check().ok
        rep = check_backend(b)
        # ... and the critique would have failed after the critic's work: this is what the check saves
        critic = LVLMCritic(b, settings=CriticSettings(use_cache=False, critic_max_new_tokens=4))
        with pytest.raises(LVLMError, match="at most one image"):
            list(critic.critique([probe_request()]))
    finally:
        b.close()
    assert not rep.ok
    assert rep.calls[0]["kind"] == "critic" and not rep.calls[0]["ok"]
    assert "at most one image per conversation" in rep.calls[0]["problem"]
    assert rep.problem.startswith("The model answered the test question but cannot take the critic's request")
    assert "refused" in rep.problem

    assert main(["lvlm-check", "--model-dir", str(folder)]) == 2
    got = capsys.readouterr()
    assert "critic   --" in got.out and "health check passed" not in got.out
    assert "error: health check failed: The model answered the test question but cannot take" in got.err
    assert "Traceback" not in got.err


def test_a_template_without_system_turns_passes_with_a_warning_about_the_chat(tiny_lvlm_dirs, tmp_path):
    folder = _with_template(tiny_lvlm_dirs["llava"], tmp_path / "no-system", NO_SYSTEM)
    b = LocalBackend(folder, device="cpu")
    try:
        rep = check_backend(b)
    finally:
        b.close()
    assert rep.ok, rep.problem  # the critique never sends a system turn
    chat = rep.calls[-1]
    assert chat["kind"] == "chat" and not chat["ok"] and "System role not supported" in chat["problem"]
    assert any("chat pane and `lvlmva ask` will fail" in w for w in rep.warnings)


def test_a_template_that_wants_an_image_in_every_turn_gets_a_blank_one(tiny_lvlm_dirs, tmp_path):
    """Detected from the folder (no family list): text-only requests then carry a blank picture."""
    folder = _with_template(tiny_lvlm_dirs["llava"], tmp_path / "image-every-turn", IMAGE_EVERY_TURN)
    b = LocalBackend(folder, device="cpu")
    plain = LocalBackend(tiny_lvlm_dirs["llava"], device="cpu")
    try:
        assert b.image_required and not plain.image_required
        assert "text_requests" in b.identity() and "text_requests" not in plain.identity()
        (gen,) = b.generate(
            [[text_message("user", "Judge segment 1.")]], GenerationSettings(max_new_tokens=4)
        )
        assert gen.generated_tokens >= 1
        # the same request with the picture written out gives the same prompt and answer
        blank = b._with_images([[text_message("user", "Judge segment 1.")]])[0]
        assert (
            blank[0]["content"][0]["type"] == "image" and blank[0]["content"][1]["text"] == "Judge segment 1."
        )
        (same,) = b.generate([blank], GenerationSettings(max_new_tokens=4))
        assert (same.text, same.prompt_tokens) == (gen.text, gen.prompt_tokens)
        # requests that carry images are left alone
        req = [user_message("Describe it.", [sample_image(0)])]
        assert b._with_images([req]) == [req]
        rep = check_backend(b)
        assert rep.ok, rep.problem
        assert any("blank grey picture" in w for w in rep.warnings)
    finally:
        b.close()
        plain.close()


def test_a_model_that_answers_nothing_is_refused_in_words(tmp_path, capsys):
    """PaliGemma ties its output layer to its input embedding: at random weights it only echoes the
    prompt's last token, a newline, so every answer is empty (as a user's PaliGemma folder answered)."""
    folder = save_tiny_lvlm(family_parts("paligemma", tie_word_embeddings=True), tmp_path / "paligemma-tied")
    b = LocalBackend(folder, device="cpu")
    try:
        old = b.health_check()
        rep = check_backend(b)
    finally:
        b.close()
    assert old.ok and old.test_output == ""  # what passed silently before
    assert not rep.ok and all(c["ok"] and c["output"] == "" for c in rep.calls)
    assert "answered every test request with nothing" in rep.problem

    assert main(["lvlm-check", "--model-dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "health check failed: The model answered every test request with nothing" in err
