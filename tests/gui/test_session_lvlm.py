"""The session's LVLM: loaded once and shared, never closed under a running job, and the GUI thread
never waits for a load when the settings change."""

from __future__ import annotations

import threading
import time

from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.lvlm.config import LVLMConfig


class FakeBackend:
    def __init__(self, folder):
        self.folder = folder
        self.closed = False

    def close(self):
        self.closed = True


def _fake_open(delay=0.0):
    made = []

    def open_backend(config, state=None):
        time.sleep(delay)
        b = FakeBackend(config.folder)
        made.append(b)
        return b

    return open_backend, made


def test_one_load_shared_by_jobs_and_not_closed_while_used(qtbot, monkeypatch):
    open_backend, made = _fake_open()
    monkeypatch.setattr("lvlmva_desktop.lvlm.config.open_backend", open_backend)
    s = Session()
    s.set_lvlm_config(LVLMConfig(folder="/models/a"))
    with s.use_lvlm() as b1, s.use_lvlm() as b2:
        assert b1 is b2 and len(made) == 1
        s.set_lvlm_config(LVLMConfig(folder="/models/b"))  # changed while in use
        assert not b1.closed  # still used by two jobs
    assert b1.closed  # closed by its last user
    with s.use_lvlm() as b3:
        assert b3.folder == "/models/b"
    s.release_lvlm()
    assert b3.closed


def test_changing_settings_does_not_wait_for_a_load(qtbot, monkeypatch):
    open_backend, made = _fake_open(delay=1.5)
    monkeypatch.setattr("lvlmva_desktop.lvlm.config.open_backend", open_backend)
    s = Session()
    s.set_lvlm_config(LVLMConfig(folder="/models/a"))
    loaded = threading.Event()

    def job():
        with s.use_lvlm():
            loaded.set()

    t = threading.Thread(target=job)
    t.start()
    time.sleep(0.2)  # the job is loading now, holding the lock
    t0 = time.monotonic()
    s.set_lvlm_config(LVLMConfig(folder="/models/b"))  # the GUI thread
    waited = time.monotonic() - t0
    t.join()
    assert waited < 0.5, f"the GUI thread waited {waited:.1f} s for a model load"
    assert made[0].closed  # the model loaded for the old settings went once its job was done
