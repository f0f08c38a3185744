"""The LVLM settings dialog: a real health check with a tiny model folder, failures in words, settings
that persist through the session, and validation that keeps bad settings (or an API key) out."""

from __future__ import annotations

import pytest
from fixtures.tiny_lvlm import make_tiny_lvlm

from lvlmva_desktop.gui.jobs import JobRunner
from lvlmva_desktop.gui.lvlm_dialog import LVLMDialog
from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.lvlm.config import LVLMConfig


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    return make_tiny_lvlm("qwen2_5_vl", tmp_path_factory.mktemp("tiny") / "qwen-tiny")


@pytest.fixture
def session():
    s = Session()
    s.set_lvlm_config(None)  # QSettings are shared by the test session: start without an LVLM
    yield s
    s.release_lvlm()


@pytest.fixture
def runner():
    r = JobRunner(lambda: None)
    yield r
    r.shutdown(10)


def _dialog(qtbot, session, runner):
    d = LVLMDialog(session, runner)
    qtbot.addWidget(d)
    return d


def test_health_check_passes_with_a_tiny_model_and_ok_stores_it(
    qtbot, session, runner, tiny_qwen, artifacts_dir
):
    d = _dialog(qtbot, session, runner)
    assert d.local_radio.isChecked() and not d.remote_code_check.isChecked()  # off by default
    d.folder_edit.setText(str(tiny_qwen))
    d.device_combo.setCurrentText("cpu")
    d.check_button.click()
    assert not d.check_button.isEnabled()  # one check at a time
    qtbot.waitUntil(lambda: d.last_report is not None, timeout=60000)
    rep = d.last_report
    assert rep.ok, rep.problem
    text = d.report_view.toPlainText()
    assert "The LVLM works" in text and "Qwen2_5_VL" in text and "CPU" in text and "Its answer" in text
    # every kind of request the critique sends was tried, as `lvlmva lvlm-check` tries them
    assert [c["kind"] for c in rep.calls] == ["critic", "judge", "summary", "chat"]
    assert "Requests tried" in text and "the judge's and the strict retry's text-only requests" in text
    assert d.check_button.isEnabled() and d.check_status.text() == "Passed."
    d.resize(560, 620)
    d.grab().save(str(artifacts_dir / "lvlm_dialog_check_passed.png"))

    with qtbot.waitSignal(session.changed, timeout=2000, check_params_cb=lambda t: t == "lvlm"):
        d.buttons.button(d.buttons.StandardButton.Ok).click()
    assert d.result() == d.DialogCode.Accepted
    stored = Session().lvlm_config()  # a fresh session reads the stored settings back
    assert stored == LVLMConfig(kind="local", folder=str(tiny_qwen), device="cpu")
    again = _dialog(qtbot, Session(), runner)
    assert again.folder_edit.text() == str(tiny_qwen) and again.device_combo.currentText() == "cpu"


def test_health_check_of_an_empty_folder_fails_in_words(qtbot, session, runner, tmp_path, artifacts_dir):
    d = _dialog(qtbot, session, runner)
    d.show()
    d.folder_edit.setText(str(tmp_path))
    d.check_button.click()
    qtbot.waitUntil(lambda: d.last_report is not None, timeout=30000)
    assert not d.last_report.ok
    text = d.report_view.toPlainText()
    assert "The check failed" in text and "has no config.json" in text and "Traceback" not in text
    d.resize(560, 560)
    d.grab().save(str(artifacts_dir / "lvlm_dialog_check_failed.png"))
    # OK refuses the same folder, in words, and stores nothing
    d.buttons.button(d.buttons.StandardButton.Ok).click()
    assert d.isVisible()  # still open: nothing was stored
    assert d.problem.isVisibleTo(d) and "has no config.json" in d.problem.text()
    assert session.lvlm_config() is None


def test_endpoint_settings_validate_and_never_hold_a_key(qtbot, session, runner, monkeypatch, artifacts_dir):
    d = _dialog(qtbot, session, runner)
    d.endpoint_radio.setChecked(True)
    assert d.pages.currentIndex() == 1
    ok = d.buttons.button(d.buttons.StandardButton.Ok)
    ok.click()
    assert "base URL" in d.problem.text() and session.lvlm_config() is None
    d.url_edit.setText("gpu-server:8000/v1")
    d.model_edit.setText("qwen2.5-vl-7b")
    ok.click()
    assert "http://" in d.problem.text()
    d.url_edit.setText("http://user:pa55-canary-w0rd@gpu-server:8000/v1")  # a password in the URL
    ok.click()
    assert "must not carry a user name or password" in d.problem.text()
    assert "pa55-canary-w0rd" not in d.problem.text() and session.lvlm_config() is None
    d.url_edit.setText("http://gpu-server:8000/v1")
    d.key_env_edit.setText("sk-abc123-secret")  # a key pasted where its variable's name belongs
    assert "does not look like a variable name" in d.key_env_status.text()
    ok.click()
    assert "NAME of the environment variable" in d.problem.text() and session.lvlm_config() is None
    monkeypatch.setenv("LVLMVA_TEST_KEY", "secret")
    d.key_env_edit.setText("LVLMVA_TEST_KEY")
    assert "is set" in d.key_env_status.text()
    d.timeout_spin.setValue(30)
    d.resize(560, 520)
    d.grab().save(str(artifacts_dir / "lvlm_dialog_endpoint.png"))
    ok.click()
    cfg = session.lvlm_config()
    assert cfg.kind == "endpoint" and cfg.api_key_env == "LVLMVA_TEST_KEY" and cfg.timeout_s == 30
    assert "secret" not in repr(cfg.to_dict())


def test_trust_remote_code_warns_and_is_stored(qtbot, session, runner, tiny_qwen):
    d = _dialog(qtbot, session, runner)
    assert "source you trust" in d.remote_code_warning.text()
    d.folder_edit.setText(str(tiny_qwen))
    d.remote_code_check.setChecked(True)
    assert "bold" in d.remote_code_warning.styleSheet()
    d.accept()
    assert session.lvlm_config().trust_remote_code is True


def test_a_folder_that_cannot_take_the_critics_request_is_refused_in_words(
    qtbot, session, runner, tmp_path, artifacts_dir
):
    """Its single test question works; the critic's three pictures do not: the check says so and OK refuses."""
    folder = make_tiny_lvlm("llava", tmp_path / "one-image")
    template = folder / "chat_template.jinja"
    template.write_text(
        "{% set n = namespace(images=0) %}{% for message in messages %}{% if message['content'] is not string %}"
        "{% for item in message['content'] %}{% if item['type'] == 'image' %}{% set n.images = n.images + 1 %}"
        "{% endif %}{% endfor %}{% endif %}{% endfor %}{% if n.images > 1 %}"
        "{{ raise_exception('This model takes at most one image per conversation.') }}{% endif %}"
        + template.read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    d = _dialog(qtbot, session, runner)
    d.show()
    d.folder_edit.setText(str(folder))
    d.device_combo.setCurrentText("cpu")
    d.check_button.click()
    qtbot.waitUntil(lambda: d.last_report is not None, timeout=60000)
    assert not d.last_report.ok
    text = d.report_view.toPlainText()
    assert "The check failed" in text and "cannot take the critic's request" in text
    assert "at most one image per conversation" in text and "Requests tried" in text
    d.resize(560, 620)
    d.grab().save(str(artifacts_dir / "lvlm_dialog_check_refused_kind.png"))
    d.buttons.button(d.buttons.StandardButton.Ok).click()
    assert d.isVisible() and session.lvlm_config() is None  # nothing stored
