"""``lvlmva-desktop --self-test``: check an installation headlessly, in under a minute on two CPU cores.

In a temporary folder it builds a small demo project, runs a short pipeline on it (train, sample, explain,
simulated critique, align, evaluate), builds a tiny random-weight Qwen2.5-VL (selftest_lvlm.py) and lets it
critique two images through the real local back-end, then verifies the audit log. One line per check,
"ok   ..." or "FAIL ..."; the exit status is 0 only when every check passed. No window, no Qt, no network:
it runs where no display is. A random model's answers are unreadable, so its verdicts may all be
"undecided"; the check is that the critique ran, was stored and recorded the model's identity.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO


class _NotRun(Exception):
    """A check whose prerequisite failed."""


def _check(out: TextIO, results: list[bool], name: str, fn: Callable[[], str]) -> bool:
    """Run one check and print its line; a failure is told with the error, never raised."""
    try:
        detail = fn()
    except _NotRun as e:
        out.write(f"FAIL {name}: not run ({e})\n")
        ok = False
    except Exception as e:  # noqa: BLE001 - every failure becomes a FAIL line
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        out.write(f"FAIL {name}: {type(e).__name__}{': ' + message if message else ''}\n")
        ok = False
    else:
        out.write(f"ok   {name}: {detail}\n")
        ok = True
    out.flush()
    results.append(ok)
    return ok


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from huggingface_hub import utils as hub
    from transformers.utils import logging as tf_logging

    tf_was, hub_was = tf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    tf_logging.disable_progress_bar()
    hub.disable_progress_bars()
    try:
        yield
    finally:
        if tf_was:
            tf_logging.enable_progress_bar()
        if not hub_was:
            hub.enable_progress_bars()


def run_self_test(out: TextIO = sys.stdout) -> int:
    """Run every check, print one line each; 0 when all passed, 1 otherwise. The temporary folder goes."""
    from lvlmva_desktop.core.runtime.offline import enforce_offline

    enforce_offline()
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="lvlmva-selftest-"))
    try:
        results = _run_checks(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n_failed = results.count(False)
    verdict = "all checks passed" if n_failed == 0 else f"{n_failed} of {len(results)} checks failed"
    out.write(f"self-test: {verdict} ({time.perf_counter() - t0:.0f} s)\n")
    out.flush()
    return 0 if n_failed == 0 else 1


def _run_checks(tmp: Path, out: TextIO) -> list[bool]:
    results: list[bool] = []
    s: dict = {}  # what each check leaves for the next

    def need(*keys: str) -> None:
        missing = [k for k in keys if k not in s]
        if missing:
            raise _NotRun(f"{missing[0]} failed")

    # -- imports -----------------------------------------------------------------------------------------
    def imports() -> str:
        import torch
        import transformers

        from lvlmva_desktop.core.data import demo  # noqa: F401
        from lvlmva_desktop.lvlm import config, local, prompts  # noqa: F401

        s["device"] = torch.device("cpu")
        return f"torch {torch.__version__}, transformers {transformers.__version__}"

    if not _check(out, results, "imports", imports):
        return results

    from lvlmva_desktop.core.data.demo import create_demo_project
    from lvlmva_desktop.core.method import pipeline
    from lvlmva_desktop.core.method.critic import GroundTruthCritic
    from lvlmva_desktop.core.method.settings import (
        AlignSettings,
        EvalSettings,
        ExplainSettings,
        SamplingSettings,
        SegmentSettings,
        TrainSettings,
    )
    from lvlmva_desktop.core.store.audit import verify_project
    from lvlmva_desktop.core.store.project import Project

    device = s["device"]
    project: Project | None = None

    # -- the demo project and the pipeline ---------------------------------------------------------------
    def demo() -> str:
        nonlocal project
        folder = create_demo_project(tmp / "project", n_train=120, n_test=60, size=32)
        project = Project.open(folder)
        s["project"] = project
        n = {split: project.count_samples(split) for split in ("train", "test")}
        return f"{n['train']} training and {n['test']} test images, classes {', '.join(project.classes)}"

    def train() -> str:
        need("project")
        from lvlmva_desktop.core.method.train import predict_proba

        mid = pipeline.train_original(project, "small_cnn", TrainSettings(epochs=2), device)
        s["model"] = mid
        model, _ = project.load_model(mid)
        test = project.load_split("test")
        acc = float((predict_proba(model, test.x, device).argmax(1) == test.y).float().mean())
        return f"model {mid}, test accuracy {acc:.2f}"

    def sample() -> str:
        need("model")
        set_id = pipeline.sample_alignment_set(project, s["model"], SamplingSettings(n=8), device)
        s["set"] = set_id
        n = len(project.alignment_members(set_id))
        if n != 8:
            raise RuntimeError(f"the alignment set has {n} images, not 8")
        return f"alignment set {set_id} of {n} images"

    explain_settings = ExplainSettings(n_background=4)
    segment_settings = SegmentSettings(n_components=4)

    def explain() -> str:
        need("set")
        eid = pipeline.explain_alignment_set(
            project, s["model"], s["set"], explain_settings, segment_settings, device
        )
        s["explanation"] = eid
        _, t = project.explanation(eid)
        return f"explanation {eid}: {len(t['sample_ids'])} attribution maps, {segment_settings.n_components} segments each"

    def critique() -> str:
        need("explanation")
        res = pipeline.run_critique(project, s["explanation"], GroundTruthCritic(error_rate=0.13, seed=0))
        s["critique"] = res
        v = res["verdicts"]
        if res["n_images"] != 8:
            raise RuntimeError(f"{res['n_images']} images critiqued, not 8")
        return (
            f"simulated critic, {res['n_images']} images, {v.get('spurious', 0)} spurious / "
            f"{v.get('relevant', 0)} relevant segments"
        )

    def align() -> str:
        need("critique")
        new_id = pipeline.align_model(project, s["model"], s["explanation"], AlignSettings(epochs=1), device)
        s["aligned"] = new_id
        return f"model {new_id} (RRR) from model {s['model']}"

    def evaluate() -> str:
        need("aligned")
        ev = pipeline.evaluate_models(
            project,
            [s["model"], s["aligned"]],
            EvalSettings(n_attribution_images=8, n_background=4, min_group_size=5),
            device,
        )
        before, after = ev[s["model"]], ev[s["aligned"]]
        return f"test accuracy {before.accuracy:.2f} -> {after.accuracy:.2f} (models {s['model']}, {s['aligned']})"

    for name, fn in (
        ("demo", demo),
        ("train", train),
        ("sample", sample),
        ("explain", explain),
        ("critique", critique),
        ("align", align),
        ("evaluate", evaluate),
    ):
        _check(out, results, name, fn)

    # -- a tiny LVLM through the real local back-end --------------------------------------------------------
    def lvlm_model() -> str:
        from lvlmva_desktop.selftest_lvlm import make_tiny_qwen2_5_vl

        t = time.perf_counter()
        folder = make_tiny_qwen2_5_vl(tmp / "tiny-lvlm")
        s["lvlm_folder"] = folder
        mb = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6
        return f"tiny random-weight qwen2_5_vl ({mb:.1f} MB) built in {time.perf_counter() - t:.1f} s"

    def lvlm_critique() -> str:
        need("project", "model", "lvlm_folder")
        from lvlmva_desktop.lvlm.config import LVLMConfig, open_backend
        from lvlmva_desktop.lvlm.factory import build_critic, critic_spec

        set_id = pipeline.sample_alignment_set(project, s["model"], SamplingSettings(n=2, seed=1), device)
        eid = pipeline.explain_alignment_set(
            project, s["model"], set_id, explain_settings, segment_settings, device
        )
        backend = open_backend(LVLMConfig(kind="local", folder=str(s["lvlm_folder"]), device="cpu"))
        try:
            # built as a critique run of the window or the command line builds it (lvlm/factory.py)
            settings = {
                "use_cache": False,
                "critic_max_new_tokens": 8,
                "judge_max_new_tokens": 8,
                "strict_retry": False,
                "image_min_side": 56,
            }
            critic = build_critic(critic_spec("lvlm", lvlm_settings=settings), project, eid, backend=backend)
            res = pipeline.run_critique(project, eid, critic)
            ident = backend.identity()
        finally:
            backend.close()
        stored = project.critiques(eid)
        if res.get("n_images") != 2 or len(stored) != 2:
            raise RuntimeError(f"{len(stored)} critiques stored, not 2")
        run_id = stored[0]["run_id"]
        recorded = json.loads(project.get_run(run_id)["settings"])["critic"]["model"]
        if not recorded.get("folder_hash") or recorded.get("folder_hash") != ident.get("folder_hash"):
            raise RuntimeError("the critique run did not record the model's identity")
        if recorded.get("model_type") != "qwen2_5_vl":
            raise RuntimeError(f"the critique run recorded model type {recorded.get('model_type')!r}")
        n_verdicts = sum(res.get("verdicts", {}).values())
        return (
            f"2 images by {recorded['model_type']} (folder hash {recorded['folder_hash'][:12]}), "
            f"{n_verdicts} verdicts stored ({res['verdicts'].get('undecided', 0)} undecided)"
        )

    with _quiet_transformers():  # no "Writing model shards" / "Loading weights" bars between the lines
        _check(out, results, "lvlm model", lvlm_model)
        _check(out, results, "lvlm critique", lvlm_critique)

    # -- the audit log -----------------------------------------------------------------------------------
    def audit_log() -> str:
        need("project")
        v = verify_project(project)
        if not v.ok:
            raise RuntimeError("; ".join(v.problems) or v.summary())
        return f"log intact, {v.n_entries} entries"

    try:
        _check(out, results, "audit", audit_log)
    finally:
        if project is not None:
            project.close()
    return results
