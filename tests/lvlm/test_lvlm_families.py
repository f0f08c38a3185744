"""Every LVLM family a user may bring either works or is refused by the check, through the real code path:
`lvlmva lvlm-check`, then a critique from the command line (critic + judge + strict retry; for PaliGemma also
one call + strict retry, and the class summary), on tiny random-weight folders built from each family's
transformers config. Random weights answer garbage: what is checked is that nothing crashes midway, that
the runs finish and that the text-only requests (judge, strict retry, summary) really ran."""

from __future__ import annotations

import json

import pytest
from test_cli import FAST, explained_cli_project

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.store.project import Project

# The seven families a new user tried, and what the check says of each: "passes" (then the critique and the
# summary must finish), or the words it refuses the folder with. None is refused today: PaliGemma, whose
# processor wants an image with every prompt, gets a blank picture with its text-only requests.
OUTCOME = {
    "paligemma": "passes",
    "smolvlm": "passes",
    "qwen2_vl": "passes",
    "qwen2_5_vl": "passes",
    "llava": "passes",
    "idefics3": "passes",
    "gemma3": "passes",
}


N_IMAGES = 2  # an alignment set of two images: one batch of each kind of request, in every mode
SETTINGS = list(FAST)
SETTINGS[SETTINGS.index("sampling.n=8")] = f"sampling.n={N_IMAGES}"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return explained_cli_project(tmp_path_factory.mktemp("families"), SETTINGS)


def _last_run(project) -> tuple[dict, list[dict]]:
    with Project.open(project) as p:
        run = p.db.execute("SELECT * FROM runs WHERE kind='critique' ORDER BY id DESC").fetchone()
        eid = p.latest_id("explanations")
        raws = [json.loads(c["raw"]) for c in p.critiques(eid)]
        return dict(run), raws[-N_IMAGES:]


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(OUTCOME))
def test_a_folder_works_or_is_refused_by_the_check(project, tiny_lvlm_dirs, family, capsys):
    folder = str(tiny_lvlm_dirs[family])
    rc = main(["lvlm-check", "--model-dir", folder])
    got = capsys.readouterr()
    if OUTCOME[family] != "passes":
        assert rc == 2 and OUTCOME[family] in got.err and "Traceback" not in got.err
        return
    assert rc == 0, got.err
    assert "health check passed" in got.out and "not among the tested families" not in got.err
    for kind in ("critic", "judge", "summary", "chat"):
        assert f"\n{kind:8s} ok" in got.out

    base = ["critique", str(project), "--quiet", "--critic", "lvlm", "--model-dir", folder, "--no-cache"]
    # two-call mode sends every kind the critique has (critic, judge, strict retry); one-call mode and the
    # summary are run for PaliGemma, whose one-call critique failed at the strict retry for a user
    modes = ([], ["--one-call"]) if family == "paligemma" else ([],)
    for mode in modes:
        assert main([*base, "--max-new-tokens", "16", *mode]) == 0, capsys.readouterr().err
        assert f"LVLM critic ({family}" in capsys.readouterr().out
        run, raws = _last_run(project)
        assert run["status"] == "finished" and json.loads(run["results"])["n_images"] == N_IMAGES
        assert len(raws) == N_IMAGES and all(r["model"]["model_type"] == family for r in raws)
        # text-only requests ran: the judge (two-call mode) and the strict retry of garbage (both modes)
        assert any(r["retried"] and isinstance(r["retry_output"], str) for r in raws)
        if not mode:
            assert all(r["calls"] >= 2 and isinstance(r["judge_output"], str) for r in raws)
        if family == "paligemma":
            assert raws[0]["model"]["text_requests"].startswith("with a blank")

    if family == "paligemma":
        assert main(["summary", str(project), "--class", "benign", "--model-dir", folder]) == 0
        assert capsys.readouterr().out.strip()
