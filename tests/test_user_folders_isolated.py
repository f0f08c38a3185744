"""The test session never writes into the user's own folders: the built-in demo project and the LVLM
settings live in the session's temporary home (tests/conftest.py), the window's QSettings in a temporary
folder too (that home, or the one tests/gui/conftest.py sets)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lvlmva_desktop.core.data.demo import default_demo_folder


def test_the_demo_project_and_settings_folders_are_the_sessions_own():
    temp = Path(tempfile.gettempdir()).resolve()
    data = Path(os.environ["XDG_DATA_HOME"]).resolve()
    config = Path(os.environ["XDG_CONFIG_HOME"]).resolve()
    for folder in (data, config):
        assert folder.is_relative_to(temp) and folder.parent.name.startswith("lvlmva-test-home-"), folder
    demo = default_demo_folder().resolve()
    assert demo.is_relative_to(data)
    assert not demo.is_relative_to(Path.home().resolve() / ".local" / "share")


def test_qsettings_are_written_in_the_sessions_config_folder(qapp):
    from PySide6.QtCore import QSettings

    s = QSettings()
    s.setValue("tests/isolated", 1)
    s.sync()
    path = Path(s.fileName()).resolve()
    # the session's config folder, or the folder tests/gui/conftest.py points QSettings to when the GUI
    # tests run in the same session: a temporary folder either way, never the user's ~/.config
    assert path.is_relative_to(Path(tempfile.gettempdir()).resolve()), path
    assert not path.is_relative_to(Path.home().resolve() / ".config"), path
    assert path.is_file()
