"""What the packaged build relies on, checked without building it: caches redirected into the temp folder,
no torch compiler in a frozen program, the spec's resources."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from lvlmva_desktop.core.runtime.sandbox import CACHE_VARIABLES, redirect_caches

REPO = Path(__file__).resolve().parents[1]


def test_redirect_caches_points_every_cache_into_one_private_folder(tmp_path, monkeypatch):
    for name in CACHE_VARIABLES:
        monkeypatch.setenv(name, "/home/someone/.cache")
    done = redirect_caches(tmp_path / "c")
    assert set(done) == set(CACHE_VARIABLES)
    for name in CACHE_VARIABLES:
        folder = Path(os.environ[name])
        assert folder.parent == tmp_path / "c" and folder.is_dir()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700


def test_no_compiled_static_cache_in_a_frozen_program(monkeypatch):
    from lvlmva_desktop.lvlm import local

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert local.compiler_available() is False


def test_the_spec_ships_resources_and_the_tested_families():
    from lvlmva_desktop.lvlm.local import TESTED_FAMILIES

    spec = (REPO / "packaging" / "lvlmva-desktop.spec").read_text()
    assert '(str(ROOT / "resources"), "resources")' in spec
    for family in TESTED_FAMILIES:
        assert f'"{family}"' in spec, f"the packaged build would not load {family} models"
    assert (REPO / "resources" / "prompts").is_dir() and (REPO / "resources" / "report").is_dir()


def test_smolvlm_processors_dependency_is_installed_and_bundled():
    """SmolVLM's processor refuses to load without num2words: a dependency of the program, in the build."""
    from transformers.utils import is_num2words_available

    pyproject = (REPO / "pyproject.toml").read_text()
    deps = pyproject[
        pyproject.index("dependencies = [") : pyproject.index("]", pyproject.index("dependencies = ["))
    ]
    assert '"num2words>=' in deps  # installed with the program, not only in the test environment
    assert is_num2words_available()  # what transformers' SmolVLM processor asks before it loads
    spec = (REPO / "packaging" / "lvlmva-desktop.spec").read_text()
    assert 'collect_submodules("num2words")' in spec
    import num2words

    # pure Python: nothing but modules to bundle (collect_data_files would find nothing to add)
    files = [
        p for p in Path(num2words.__file__).parent.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ]
    assert files and all(p.suffix == ".py" for p in files)


def test_a_cache_folder_someone_else_made_is_not_used(tmp_path, monkeypatch):
    """The folder's name is predictable: a link or an open folder planted there is not written to."""
    from lvlmva_desktop.core.runtime import sandbox

    monkeypatch.setattr(sandbox.tempfile, "tempdir", str(tmp_path))
    mine = sandbox.cache_root()
    assert mine.parent == tmp_path and stat.S_IMODE(mine.stat().st_mode) == 0o700
    assert sandbox.cache_root() == mine  # reused once it is ours
    mine.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mine.symlink_to(elsewhere)  # a link planted under the predictable name
    other = sandbox.cache_root()
    assert other != mine and not other.is_symlink() and stat.S_IMODE(other.stat().st_mode) == 0o700
    mine.unlink()
    mine.mkdir(mode=0o777)
    mine.chmod(0o777)  # an open folder
    assert sandbox.cache_root() != mine
