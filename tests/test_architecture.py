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
        "import pkgutil, importlib, lvlmva_desktop.cli\n"
        "import lvlmva_desktop.core as c, lvlmva_desktop.lvlm as l, lvlmva_desktop.report as r\n"
        "for pkg in (c, l, r):\n"
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


def _lint_copy(tmp_path, edit) -> subprocess.CompletedProcess:
    """import-linter, with this project's contracts, on a copy of the package that ``edit`` changed."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(
        ROOT / "lvlmva_desktop", copy / "lvlmva_desktop", ignore=shutil.ignore_patterns("__pycache__")
    )
    edit(copy / "lvlmva_desktop")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**__import__("os").environ, "PYTHONPATH": str(copy)}
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_the_layers_contract_catches_the_core_importing_the_lvlm_package(tmp_path):
    """The layers (window and command line > report > LVLM package > core) are checked by the tool: a core
    module that imports the LVLM package, or the LVLM package importing the report, breaks the contract."""

    def core_imports_lvlm(pkg):
        with (pkg / "core" / "runtime" / "timefmt.py").open("a") as f:
            f.write("\nfrom lvlmva_desktop.lvlm import prompts  # noqa: E402,F401\n")

    def lvlm_imports_report(pkg):
        with (pkg / "lvlm" / "render.py").open("a") as f:
            f.write("\nfrom ..report import figures  # noqa: E402,F401\n")

    intact = _lint_copy(tmp_path / "intact", lambda pkg: None)
    assert intact.returncode == 0, intact.stdout[-3000:]
    for edit, what in ((core_imports_lvlm, "lvlmva_desktop.core.runtime.timefmt -> lvlmva_desktop.lvlm.prompts"),
                       (lvlm_imports_report, "lvlmva_desktop.lvlm.render -> lvlmva_desktop.report.figures")):  # fmt: skip
        r = _lint_copy(tmp_path / edit.__name__, edit)
        assert r.returncode != 0, r.stdout[-3000:]
        assert "Layers" in r.stdout and "BROKEN" in r.stdout and what in r.stdout, r.stdout[-3000:]


#: where the project's SQL may run: the store, core/store/ (its parts, the lifecycle, the audit log and its
#: checks, the writer lock, recovery, the export); every other module asks its named queries (issue 16)
_SQL_OWNERS = ("lvlmva_desktop/core/store/",)
_SQL_CALL = re.compile(r"\bdb\.execute\(|\.db\.execute\b|executemany\(|\bdb\.cursor\(")


def test_only_the_store_runs_sql():
    """No module outside the store runs SQL on the project's database (``db.execute(``, ``executemany(``,
    or a cursor of ``db``): what it needs is a named query on Project or one of its parts."""
    offenders: list[str] = []
    for path in sorted((ROOT / "lvlmva_desktop").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(_SQL_OWNERS):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _SQL_CALL.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "SQL outside the store (add a named query to core/store/):\n" + "\n".join(offenders)
