import atexit
import os
import shutil
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The test session's own user folders, before anything reads them: the built-in demo project
# (XDG_DATA_HOME/lvlmva-desktop/demo-project) and anything Qt keeps in XDG_CONFIG_HOME are made and
# changed here, never in the user's own, and no run sees what an earlier run left (subprocesses that the
# tests start inherit them; the GUI tests' QSettings have their own folder, tests/gui/conftest.py).
# Removed when the session ends.
_TEST_HOME = tempfile.mkdtemp(prefix="lvlmva-test-home-")
os.environ["XDG_DATA_HOME"] = os.path.join(_TEST_HOME, "data")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_TEST_HOME, "config")
atexit.register(shutil.rmtree, _TEST_HOME, ignore_errors=True)
