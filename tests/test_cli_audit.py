"""`lvlmva audit`: the log one line per entry (newest last), in full as JSON, and --verify's exit code."""

import json
import sqlite3

from test_cli import _generate

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.store.project import DATABASE, current_user


def test_audit_lists_verifies_and_fails_on_tampering(tmp_path, capsys):
    data, proj = tmp_path / "data", tmp_path / "proj"
    _generate(data)
    assert main(["import", str(proj), "--csv", str(data / "manifest.csv"), "--quiet"]) == 0
    assert main(["describe", str(proj), "--defaults", "isic-like"]) == 0
    capsys.readouterr()

    assert main(["audit", str(proj)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[4] for line in lines] == ["create_project", "import", "class_descriptions"]
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3]
    assert all(line.split()[3] == current_user() and len(line) <= 160 for line in lines)
    assert "imported=72" in lines[1] and "data:" in lines[1]

    assert main(["audit", str(proj), "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full[1]["params"]["imported"] == 72 and len(full[1]["hashes"]["data"]) == 64

    assert main(["audit", str(proj), "--verify", "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == f"audit log intact: 3 entries, head {full[-1]['entry_hash']}"
    assert out[1].startswith("content intact: 73 rows and files match the audit log")
    assert "  ok   images and labels: 72 verified" in out

    con = sqlite3.connect(str(proj / DATABASE))
    con.execute("UPDATE audit_log SET params=replace(params, '72', '70') WHERE id=2")
    con.commit()
    con.close()
    assert main(["audit", str(proj), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "audit log NOT intact: 1 problem(s) in 3 entries" in out
    assert "entry 2 (import) was changed after it was written" in out and "Traceback" not in out


def test_audit_of_a_folder_that_is_no_project_is_an_error_line(tmp_path, capsys):
    assert main(["audit", str(tmp_path), "--verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not an LVLM-VA project" in err
