"""Project-wide promises: the Qt-free core (import-linter), lint, and no network or pickle in the code."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_core_imports_with_qt_unavailable():
    code = (
        "import sys; sys.modules['PySide6'] = None; sys.modules['pyqtgraph'] = None\n"
        "import pkgutil, importlib, lvlmva_desktop.core as c, lvlmva_desktop.lvlm as l, lvlmva_desktop.cli\n"
        "for pkg in (c, l):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_ruff_is_clean():
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "lvlmva_desktop", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_unpickling_and_no_hub_downloads_in_the_package():
    for path in (ROOT / "lvlmva_desktop").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            if re.search(r"torch\.load\(", line):
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
            assert "pickle.load" not in line, f"{path}: {line.strip()}"
        for m in re.finditer(r"from_pretrained\(", text):
            depth, end = 0, m.end() - 1
            for end in range(m.end() - 1, len(text)):  # the whole call, over several lines if need be
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            call = text[m.start() : end + 1]
            assert "local_files_only=True" in call, f"{path}: {call}"
