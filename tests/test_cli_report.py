"""`lvlmva report`: the audit report of a project built from the command line, HTML and PDF, paths printed."""

import re
import subprocess
import sys

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.store import audit
from lvlmva_desktop.core.store.project import Project, sha256_file

FAST = ["--set", "train.epochs=1", "--set", "align.epochs=1", "--set", "sampling.n=6"]
FAST += ["--set", "evaluate.n_attribution_images=4", "--set", "evaluate.min_group_size=1"]


def test_report_from_the_command_line(tmp_path, capsys):
    data, proj, out = tmp_path / "data", tmp_path / "proj", tmp_path / "audit"
    gen = ["generate", "isic-like", str(data), "--quiet"]
    assert main(gen + ["--param", "n_train=64", "--param", "n_test=32", "--param", "size=32"]) == 0
    assert main(["import", str(proj), "--csv", str(data / "manifest.csv"), "--quiet"]) == 0
    assert main(["describe", str(proj), "--defaults", "isic-like"]) == 0
    assert main(["run", str(proj), "--quiet", "--device", "cpu", "--critic", "simulated", *FAST]) == 0
    with Project.open(proj, read_only=True) as p:
        sample = p.alignment_members(p.latest_id("alignment_sets"))[0]["sample_id"]
    assert main(["verdict", str(proj), "--sample", str(sample), "--segment", "1", "--set", "spurious"]) == 0
    capsys.readouterr()

    assert main(["report", str(proj), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "report.html"), str(out / "report.pdf")]
    page = (out / "report.html").read_text(encoding="utf-8")
    with Project.open(proj, read_only=True) as p:
        assert p.data_hash() in page
    assert f'id="img{sample}"' in page and "Expert overrides (1)" in page
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) >= 6

    with Project.open(proj, read_only=True) as p:
        entry = audit.entries(p.db)[-1]
    assert entry["action"] == "report" and entry["params"]["folder"] == str(out.resolve())
    assert entry["hashes"] == {n: sha256_file(out / n) for n in ("report.html", "report.pdf")}

    html_only = tmp_path / "html-only"
    assert main(["report", str(proj), "--out", str(html_only), "--no-pdf", "--device", "cpu", "--quiet"]) == 0
    assert capsys.readouterr().out.split() == [str(html_only / "report.html")]
    assert sorted(p.name for p in html_only.iterdir()) == ["report.html"]


def test_report_of_a_folder_that_is_no_project_is_an_error_line(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not an LVLM-VA project" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


HOLD = (
    "import sys, time\n"
    "from lvlmva_desktop.core.store.project import Project\n"
    "p = Project.open(sys.argv[1])\n"
    "print('holding', flush=True)\n"
    "time.sleep(120)\n"
)


def test_report_while_another_program_holds_the_project(tmp_path, capsys):
    from lvlmva_desktop.core.data.demo import create_demo_project

    proj = create_demo_project(tmp_path / "demo", n_train=32, n_test=16, size=32)
    with Project.open(proj, read_only=True) as p:
        n_entries = len(audit.entries(p.db))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(proj)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        out = tmp_path / "audit"
        assert main(["report", str(proj), "--out", str(out), "--no-pdf", "--device", "cpu", "--quiet"]) == 0
    finally:
        holder.kill()
        holder.wait()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("note:") and "not recorded in the audit log" in lines[0]
    assert lines[1:] == [str(out / "report.html")]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "No aligned model yet" in page and "No explanation" in page
    with Project.open(proj, read_only=True) as p:
        assert len(audit.entries(p.db)) == n_entries  # nothing was written to the held project
