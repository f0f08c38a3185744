"""The benchmark scripts refuse what they cannot run with a clear message, not a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "alignment.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_alignment_benchmark_names_the_sets_it_knows():
    r = _run("--sets", "nope")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown set nope; known sets: decoymnist, isic-like, elpv-tags, isic-control" in r.stderr
    assert "(or use --manifest CSV)" in r.stderr


def test_a_manifest_needs_its_image_size_and_channels(tmp_path):
    r = _run("--manifest", str(tmp_path / "m.csv"))
    assert r.returncode == 2 and "--manifest needs --image-size and --channels" in r.stderr


@pytest.mark.slow  # 45 s on 2 busy cores (issue 16)
def test_any_labelled_manifest_runs_the_table_with_the_defaults(tmp_path):
    from lvlmva_desktop.core.data.benchsets import generate_surface

    manifest = generate_surface(
        tmp_path / "data", seed=0, n_train=80, n_test=100, size=32, artefact="dot", p_defective=0.9
    )
    r = _run(
        "--manifest", str(manifest), "--image-size", "32", "--channels", "1", "--seeds", "0",
        "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "train: images per class and group" in r.stdout  # the correlation is shown first
    summary = r.stdout.split("# Summary")[1]
    assert "## manifest (seeds [0]; small_cnn; program defaults)" in summary
    for row in (
        "ERM",
        "RRR-GT (set)",
        "LVLM-VA sim@1.00 +check",
        "LVLM-VA sim@0.87 +check",
        "LVLM-VA sim@0.42 +check",
    ):
        assert f"\n{row}" in summary
    assert "WGA gap RRR-GT (set) - ERM" in summary and "check at sim@0.87" in summary
    import json

    (result,) = json.loads((tmp_path / "r.json").read_text())
    assert result["set"] == "manifest" and result["n_train"] == 80
    # Separate runs (one per seed, e.g. in parallel) are summed up from their --json files.
    other = dict(result, seed=1)
    (tmp_path / "r1.json").write_text(json.dumps([other]))
    s = _run("--summarise", str(tmp_path / "r.json"), str(tmp_path / "r1.json"))
    assert s.returncode == 0, s.stderr[-2000:]
    assert "## manifest (seeds [0, 1]; small_cnn; program defaults)" in s.stdout
    assert "check at sim@0.87" in s.stdout


def test_benchmark_scripts_import_only_names_that_exist():
    """A script that imports a renamed name from another benchmark script breaks only when someone runs it
    (decoy_coverage.py imported alignment.CONFIGS after it became SETS)."""
    import ast
    import importlib

    bench = ROOT / "benchmarks"
    local = {p.stem for p in bench.glob("*.py")}
    sys.path.insert(0, str(bench))
    try:
        for script in sorted(bench.glob("*.py")):
            for node in ast.walk(ast.parse(script.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module in local:
                    module = importlib.import_module(node.module)
                    for alias in node.names:
                        assert hasattr(module, alias.name), (
                            f"{script.name}: {node.module}.{alias.name} is gone"
                        )
    finally:
        sys.path.remove(str(bench))


def test_review_routing_names_the_sets_it_knows():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "review_routing.py"), "--sets", "nope"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown set nope; known sets: decoymnist, isic-like, elpv-tags" in r.stderr


def _routing_result(seed: int, routed: list[float], random: list[list[float]]) -> dict:
    points = [0, 10, 20, 40]

    def curve(wgas):
        return [
            {"k": k, "wga": w, "accuracy": 0.9, "strength": 1.0, "wrong_fixed": k, "false_spurious_fixed": k // 2,
             "held_back": 3}
            for k, w in zip(points, wgas)
        ]  # fmt: skip

    variant = {"routed": curve(routed), "random": [curve(c) for c in random]}
    return {
        "set": "toy", "seed": seed, "arch": "small_cnn", "points": points, "n_align": 40, "n_segments": 4,
        "verdict_accuracy": 0.87, "wrong_verdicts": 20, "false_spurious": 12, "erm": {"wga": 0.4},
        "gt": {"wga": 0.8}, "variants": {"check": variant, "no-check": variant}, "n_random": len(random),
        "alignments": 9, "seconds": 1.0,
    }  # fmt: skip


def test_review_routing_interpolates_the_reviews_to_reach_a_target():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from review_routing import reviews_to_reach, summarise
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import pytest

    points = [0, 10, 20, 40]
    assert reviews_to_reach(points, [0.5, 0.6, 0.7, 0.8], 0.65) == pytest.approx(15.0)
    assert reviews_to_reach(points, [0.75, 0.6, 0.7, 0.8], 0.72) == 0.0  # reached before any review
    assert reviews_to_reach(points, [0.5, 0.6, 0.7, 0.8], 0.9) is None
    assert reviews_to_reach(points, [0.5, 0.8, 0.6, 0.8], 0.7) == pytest.approx(20 / 3)  # the first crossing
    # target 90% of the mean RRR-GT WGA (0.8) = 0.72; the mean curves over two seeds, random first averaged
    # over its permutations: routed 0.6 0.74 ..., random 0.6 0.65 0.7 0.76
    results = [
        _routing_result(0, [0.6, 0.74, 0.78, 0.8], [[0.6, 0.64, 0.7, 0.76], [0.6, 0.66, 0.7, 0.76]]),
        _routing_result(1, [0.6, 0.74, 0.78, 0.8], [[0.6, 0.65, 0.7, 0.76], [0.6, 0.65, 0.7, 0.76]]),
    ]
    text, line = summarise(results)
    assert line == "routing: 9 reviews routed vs 27 random to reach 90% of RRR-GT WGA (set toy)"
    assert "to reach 98% of RRR-GT WGA (0.784): 24 reviews routed vs not reached by 40 random" in text
    assert "without the consistency check" in text and "no token probabilities" in text


def test_gpu_script_fits_in_one_lent_window():
    """benchmarks/gpu.sh must end within 8 minutes on a lent GPU (15 minutes a window, start included): its
    steps' time limits, which bound every step, add up to at most 480 s, and it runs the RRR and 7B steps."""
    import re

    text = (ROOT / "benchmarks" / "gpu.sh").read_text()
    steps = re.findall(r"^step (\w+) (\d+) ", text, flags=re.M)
    assert {"tests", "rrr_step", "lvlm_7b"} <= {name for name, _ in steps}
    assert sum(int(secs) for _, secs in steps) <= 480


def test_rrr_step_benchmark_prints_a_ratio_per_architecture():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "rrr_step.py"), "--device", "cpu", "--archs", "mlp",
         "--repeats", "2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    row = [line for line in r.stdout.splitlines() if line.startswith("mlp")]
    assert len(row) == 1 and row[0].rstrip().endswith("x"), r.stdout
    assert float(row[0].split()[-1].rstrip("x")) > 0
