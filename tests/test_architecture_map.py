"""The newcomer's map in docs/ARCHITECTURE.md ("Map: method step → code") names only what exists: every
file, every dotted name (importable module, then attributes), every menu or button text (a string the
window's code holds, "&" removed) and every `lvlmva` command (a subcommand of the command line)."""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lvlmva_desktop"
SECTION = "## Map: method step → code"
COLUMNS = ["step", "files", "core function", "GUI job", "CLI command"]
STEPS = [  # the method's steps and the program's own, in the order a newcomer meets them
    "import",
    "train the original model",
    "sample the alignment set",
    "explain",
    "segment",
    "critique",
    "review / override verdicts",
    "consistency check",
    "masks",
    "RRR alignment",
    "evaluate / qualify",
    "spot check",
    "report",
    "audit",
    "resume",
]

DOTTED = re.compile(r"^[a-z_][a-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
COMMAND = re.compile(r"^lvlmva ([a-z][a-z-]*)$")


def map_rows(text: str) -> list[dict[str, str]]:
    """The table of the map section as one dict per row, keyed by the header's column names."""
    assert text.count(SECTION) == 1, f"docs/ARCHITECTURE.md has no (or two) '{SECTION}' sections"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    lines = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    header, rule, body = cells[0], cells[1], cells[2:]
    assert all(set(c) <= set("-: ") for c in rule), "the table's second line is not its rule"
    assert all(len(r) == len(header) for r in body), "a row has another number of cells than the header"
    return [dict(zip(header, r)) for r in body]


def spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def italics(cell: str) -> list[str]:
    return re.findall(r"(?<![*\w])\*([^*]+)\*(?![*\w])", cell)


def resolve(dotted: str) -> object:
    """Import the longest module prefix of lvlmva_desktop.<dotted>, then getattr the rest."""
    parts = f"lvlmva_desktop.{dotted}".split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as e:
            if e.name is not None and ".".join(parts[:cut]).startswith(e.name) and cut > 1:
                continue  # this prefix is not a module: try a shorter one
            raise
        for name in parts[cut:]:
            obj = getattr(obj, name)  # AttributeError names what is missing
        return obj
    raise ModuleNotFoundError(dotted)


def gui_texts() -> set[str]:
    """Every string literal in lvlmva_desktop/gui, with Qt's mnemonic "&" removed."""
    out: set[str] = set()
    for path in (PACKAGE / "gui").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value.replace("&&", "\0").replace("&", "").replace("\0", "&"))
    return out


def subcommands() -> set[str]:
    """The subcommands `lvlmva --help` lists, from the installed console script's own entry point."""
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "lvlmva"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        ep.load()(["--help"])
    found = re.search(r"\{([a-z,-]+)\}", out.getvalue())
    assert found, out.getvalue()
    return set(found.group(1).split(","))


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return map_rows((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))


def test_the_map_has_its_columns_and_a_row_for_every_step(rows):
    assert list(rows[0]) == COLUMNS
    firsts = [r["step"] for r in rows]
    for step in STEPS:
        assert any(step.lower() in f.lower() for f in firsts), f"no row for '{step}' in {firsts}"
    for r in rows:
        for col in ("files", "core function", "CLI command"):
            assert spans(r[col]), f"row '{r['step']}' names nothing in '{col}'"


def test_every_file_in_the_map_exists(rows):
    for r in rows:
        for path in spans(r["files"]):
            assert "/" in path, f"'{path}' in row '{r['step']}' is not a path under lvlmva_desktop/"
            assert (PACKAGE / path).exists(), f"lvlmva_desktop/{path} (row '{r['step']}') does not exist"


def test_every_name_in_the_map_is_importable(rows):
    checked = 0
    for r in rows:
        for col in ("core function", "GUI job"):
            for name in spans(r[col]):
                assert DOTTED.match(name), f"'{name}' in row '{r['step']}', '{col}' is not a dotted name"
                obj = resolve(name)
                assert callable(obj), f"{name} is not a function or class"
                checked += 1
    assert checked >= 30


def test_every_menu_and_button_text_in_the_map_is_in_the_window(rows):
    texts = gui_texts()
    seen = 0
    for r in rows:
        for words in italics(r["GUI job"]):
            for part in words.split(" > "):
                assert part in texts, f"'{part}' (row '{r['step']}') is no menu or button text of the window"
                seen += 1
    assert seen >= 15


def test_every_command_in_the_map_is_a_subcommand_of_lvlmva(rows):
    known = subcommands()
    assert {"train", "sample", "explain", "critique", "align", "evaluate"} <= known
    named = set()
    for r in rows:
        for cmd in spans(r["CLI command"]):
            m = COMMAND.match(cmd)
            assert m, f"'{cmd}' in row '{r['step']}' is not written as `lvlmva COMMAND`"
            assert m.group(1) in known, f"`{cmd}` (row '{r['step']}') is not a subcommand: {sorted(known)}"
            named.add(m.group(1))
    assert {"train", "sample", "explain", "critique", "align", "evaluate", "resume", "report"} <= named


def test_the_checks_fail_on_names_that_do_not_exist():
    """The parser and resolver are strict: a made-up file, name, menu text or row shape is caught."""
    with pytest.raises(AttributeError):
        resolve("core.method.pipeline.no_such_step")
    with pytest.raises((ModuleNotFoundError, AttributeError)):
        resolve("core.no_such_module.run")
    assert "Method" in gui_texts() and "2 Sample" in gui_texts() and "9 Nothing" not in gui_texts()
    bad = f"{SECTION}\n\n| step | files |\n|---|---|\n| a | b | c |\n"
    with pytest.raises(AssertionError):
        map_rows(bad)
    rows = map_rows(
        f"{SECTION}\n\n| step | files |\n|---|---|\n| x | `core/x.py`, *File > Quit* |\n\n## Next"
    )
    assert rows == [{"step": "x", "files": "`core/x.py`, *File > Quit*"}]
    assert spans(rows[0]["files"]) == ["core/x.py"] and italics(rows[0]["files"]) == ["File > Quit"]
