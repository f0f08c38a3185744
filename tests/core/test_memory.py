"""GPU out-of-memory: batched steps halve the batch, say so, and keep finished batches; training stops cleanly.

On the CPU the out-of-memory error is injected (a forward pre-hook, or a wrapper, that raises
torch.cuda.OutOfMemoryError for batches larger than a limit) while the real kernels compute everything
else; the last test fills a real GPU (marked ``gpu``, skipped without CUDA).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lvlmva_desktop.core.data.importing import import_csv_manifest
from lvlmva_desktop.core.method import segment as segment_mod
from lvlmva_desktop.core.method.explain import ExplainSettings, attribute
from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.method.segment import SegmentSettings, ppeps_wgm
from lvlmva_desktop.core.method.train import TrainSettings, predict_proba
from lvlmva_desktop.core.runtime.errors import describe_error
from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState
from lvlmva_desktop.core.runtime.memory import GPUOutOfMemory, is_out_of_memory, run_batched
from lvlmva_desktop.core.store.project import Project
from lvlmva_desktop.core.views.browse import model_predictions

CPU = torch.device("cpu")


def _oom(n: int) -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError(
        f"CUDA out of memory. Tried to allocate {n} MiB (injected by the test)"
    )


class Messages:
    """A TaskState that keeps its messages and progress."""

    def __init__(self) -> None:
        self.info: list[str] = []
        self.progress: list[float] = []
        self.state = TaskState(on_progress=lambda f, m: self.progress.append(f), on_message=self.info.append)


def oom_above(limit: int, calls: list | None = None):
    """A forward pre-hook that fails like CUDA does for inputs with more than ``limit`` rows; the inputs it
    lets through are appended to ``calls``."""

    def hook(module, args):
        x = args[0]
        while isinstance(x, tuple):  # captum passes its inputs as a tuple
            x = x[0]
        if x.shape[0] > limit:
            raise _oom(x.shape[0])
        if calls is not None:
            calls.append(x.detach().clone())

    return hook


def slices_of(x: torch.Tensor, inputs: list[torch.Tensor]) -> list[tuple[int, int]]:
    """The ranges x[a:b] that appear among the model's inputs (as a plain forward pass of those images)."""
    found = []
    for inp in inputs:
        for a in range(len(x) - len(inp) + 1):
            if inp.shape[1:] == x.shape[1:] and torch.equal(inp, x[a : a + len(inp)]):
                found.append((a, a + len(inp)))
                break
    return found


# -- the helper ----------------------------------------------------------------------------------------
def test_run_batched_halves_on_oom_keeps_finished_batches_and_says_so():
    ranges: list[tuple[int, int]] = []
    limit = {"k": 64}

    def fn(a: int, b: int) -> list[int]:
        if b - a > limit["k"]:
            raise _oom(b - a)
        ranges.append((a, b))
        if a == 128:  # memory gets tighter in the middle of the run (another program took some)
            limit["k"] = 20
        return [i * i for i in range(a, b)]

    m = Messages()
    parts = run_batched(fn, 300, 64, m.state, what="testing")
    assert [v for p in parts for v in p] == [i * i for i in range(300)]
    # every item computed exactly once, in order: no finished batch was recomputed
    assert ranges[0] == (0, 64) and ranges[1] == (64, 128) and ranges[2] == (128, 192)
    assert all(a == prev_b for (_, prev_b), (a, _) in zip(ranges, ranges[1:])) and ranges[-1][1] == 300
    assert sum(b - a for a, b in ranges) == 300
    assert m.info == [
        "GPU memory ran out at batch 64 while testing; continuing with batch 32.",
        "GPU memory ran out at batch 32 while testing; continuing with batch 16.",
    ]
    assert m.progress[-1] == 1.0 and m.progress == sorted(m.progress)


def test_run_batched_halves_the_failed_tail_batch_and_reads_runtime_error_text():
    seen = []

    def fn(a, b):
        if a >= 8 and b - a > 1:
            raise RuntimeError("CUDA error: out of memory")  # how older builds and some kernels say it
        seen.append((a, b))
        return b - a

    m = Messages()
    assert run_batched(fn, 10, 8, m.state, what="x") == [8, 1, 1]
    assert seen == [(0, 8), (8, 9), (9, 10)]
    assert m.info == ["GPU memory ran out at batch 2 while x; continuing with batch 1."]


def test_run_batched_gives_up_in_words_at_one_item_and_passes_other_errors():
    with pytest.raises(GPUOutOfMemory, match="even with one item at a time") as err:
        run_batched(lambda a, b: (_ for _ in ()).throw(_oom(1)), 5, 4, what="testing")
    told = describe_error(err.value, "Explaining")
    assert told.kind == "memory" and "smaller image size" in told.message and "Traceback" not in told.message
    with pytest.raises(ValueError, match="not memory"):
        run_batched(lambda a, b: (_ for _ in ()).throw(ValueError("not memory")), 5, 4, what="x")
    with pytest.raises(ValueError, match="batch_size"):
        run_batched(lambda a, b: 0, 5, 0, what="x")
    assert not is_out_of_memory(MemoryError()) and not is_out_of_memory(RuntimeError("shape mismatch"))
    assert is_out_of_memory(torch.OutOfMemoryError("x")) and is_out_of_memory(
        RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)")
    )


def test_run_batched_checks_cancel_between_batches():
    state = TaskState()
    done = []

    def fn(a, b):
        done.append(a)
        state.cancel()
        return a

    with pytest.raises(Cancelled):
        run_batched(fn, 10, 2, state, what="x")
    assert done == [0]


# -- the batched steps ---------------------------------------------------------------------------------
def test_attributions_survive_oom_with_identical_maps():
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", 3, 3, (16, 16))).eval()
    x, bg = torch.rand(10, 3, 16, 16), torch.rand(4, 3, 16, 16)
    t = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    settings = ExplainSettings(batch_size=8)
    want = attribute(model, x, t, bg, settings, CPU)
    # DeepLIFT-SHAP runs the model on batch x background rows: 8 x 4 = 32 fail, 4 x 4 = 16 fit
    calls: list[int] = []
    handle = model.register_forward_pre_hook(oom_above(16, calls))
    m = Messages()
    try:
        got = attribute(model, x, t, bg, settings, CPU, m.state)
    finally:
        handle.remove()
    assert torch.allclose(got.maps, want.maps, atol=1e-6) and torch.allclose(
        got.deltas, want.deltas, atol=1e-6
    )
    assert m.info == ["GPU memory ran out at batch 8 while computing attributions; continuing with batch 4."]
    # after the checks before the work (the method check on x[:1], the time trial on x[:4]), each batch
    # went through the model's plain forward pass (the f(x) of the convergence check) once: nothing
    # finished was recomputed
    seen = slices_of(x, calls)
    assert seen[-3:] == [(0, 4), (4, 8), (8, 10)] and all(stop <= 4 for _, stop in seen[:-3])


def test_predictions_survive_oom_and_nothing_is_recomputed():
    torch.manual_seed(0)
    model = build_model(ModelSpec("mlp", 2, 3, (8, 8))).eval()
    x = torch.rand(100, 3, 8, 8)
    want = predict_proba(model, x, CPU, batch_size=64)
    calls: list[int] = []
    model.register_forward_pre_hook(oom_above(20, calls))
    m = Messages()
    got = predict_proba(model, x, CPU, batch_size=64, state=m.state)
    assert torch.allclose(got, want, atol=1e-6)
    assert slices_of(x, calls) == [(0, 16), (16, 32), (32, 48), (48, 64), (64, 80), (80, 96), (96, 100)]
    assert [s.split(" while")[0] for s in m.info] == [
        "GPU memory ran out at batch 64",
        "GPU memory ran out at batch 32",
    ]


def test_browser_predictions_survive_oom(tmp_path, monkeypatch):
    from PIL import Image

    (tmp_path / "d").mkdir()
    rows = ["path,label"]
    for i in range(40):
        Image.fromarray(np.full((8, 8, 3), 6 * i, np.uint8)).save(tmp_path / "d" / f"{i}.png")
        rows.append(f"{i}.png,{'ab'[i % 2]}")
    (tmp_path / "d" / "m.csv").write_text("\n".join(rows))
    rep = import_csv_manifest(tmp_path / "d" / "m.csv")
    with Project.create(tmp_path / "p", "t", rep.classes, (8, 8), 3) as p:
        p.add_samples(rep)
        spec = ModelSpec("mlp", 2, 3, (8, 8))
        torch.manual_seed(0)
        mid = p.save_model(build_model(spec), spec, "m", "erm", None, None)
        model, _ = p.load_model(mid)
        want = {s: predict_proba(model, p.load_split(s).x, CPU) for s in ("train", "test")}
        real_load = p.load_model

        def load_small_gpu(model_id):
            module, spec = real_load(model_id)
            module.register_forward_pre_hook(oom_above(8))
            return module, spec

        monkeypatch.setattr(p, "load_model", load_small_gpu)
        m = Messages()
        probs = model_predictions(p, mid, CPU, m.state)
        ids = [r["id"] for r in p.samples()]
        for split, w in want.items():
            rows_ = [ids.index(s) for s in p.load_split(split).sample_ids]
            np.testing.assert_allclose(probs[rows_], w.numpy(), atol=1e-6)
    assert any(s.startswith("GPU memory ran out at batch") and "the train images" in s for s in m.info)


def test_segmentation_survives_oom_with_identical_segments(monkeypatch):
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(7, 16, 16, generator=g) - 0.3
    st = SegmentSettings(n_components=3)
    want = ppeps_wgm(maps, st, batch_size=4)
    real = segment_mod._fit_chunk
    sizes: list[int] = []

    def small_gpu(att, settings, state=None):
        if att.shape[0] > 2:
            raise _oom(att.shape[0])
        sizes.append(att.shape[0])
        return real(att, settings, state)

    monkeypatch.setattr(segment_mod, "_fit_chunk", small_gpu)
    m = Messages()
    got = ppeps_wgm(maps, st, m.state, batch_size=4)
    assert torch.equal(got.labels, want.labels) and torch.allclose(got.weights, want.weights)
    assert sum(sizes) == 7 and m.info[0].startswith("GPU memory ran out at batch 4 while segmenting")


# -- training stops, the project keeps no half model ---------------------------------------------------
def test_training_oom_stops_with_advice_and_saves_nothing(tmp_path, monkeypatch):
    from lvlmva_desktop.core.method import pipeline

    rep_rows = ["path,label"]
    from PIL import Image

    (tmp_path / "d").mkdir()
    for i in range(24):
        Image.fromarray(np.full((8, 8, 3), 9 * i, np.uint8)).save(tmp_path / "d" / f"{i}.png")
        rep_rows.append(f"{i}.png,{'ab'[i % 2]}")
    (tmp_path / "d" / "m.csv").write_text("\n".join(rep_rows))
    rep = import_csv_manifest(tmp_path / "d" / "m.csv")
    real_build = pipeline.build_model

    def build_on_small_gpu(spec):
        model = real_build(spec)
        model.register_forward_pre_hook(oom_above(4))
        return model

    monkeypatch.setattr(pipeline, "build_model", build_on_small_gpu)
    with Project.create(tmp_path / "p", "t", rep.classes, (8, 8), 3) as p:
        p.add_samples(rep)
        with pytest.raises(GPUOutOfMemory) as err:
            pipeline.train_original(p, "mlp", TrainSettings(epochs=1, batch_size=16), CPU)
        assert "no model was saved" in str(err.value) and "for example 8 instead of 16" in str(err.value)
        run = p.db.execute("SELECT status, error FROM runs WHERE kind='train'").fetchone()
        assert run["status"] == "failed" and "smaller batch size" in run["error"]
        assert p.models() == [] and not list((tmp_path / "p" / "models").glob("*.safetensors"))
        json.dumps(describe_error(err.value, "Training").message)  # words, not a traceback
        assert describe_error(err.value, "Training").kind == "memory"


def test_cli_reports_training_oom_as_one_error_line(tmp_path, monkeypatch, capsys):
    from lvlmva_desktop import cli
    from lvlmva_desktop.core.method import pipeline

    real_build = pipeline.build_model
    monkeypatch.setattr(
        pipeline,
        "build_model",
        lambda spec: (lambda m: (m.register_forward_pre_hook(oom_above(2)), m)[1])(real_build(spec)),
    )
    from PIL import Image

    (tmp_path / "d").mkdir()
    rows = ["path,label"]
    for i in range(8):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(tmp_path / "d" / f"{i}.png")
        rows.append(f"{i}.png,{'ab'[i % 2]}")
    (tmp_path / "d" / "m.csv").write_text("\n".join(rows))
    proj = str(tmp_path / "p")
    assert (
        cli.main(["import", proj, "--csv", str(tmp_path / "d" / "m.csv"), "--quiet", "--image-size", "8"])
        == 0
    )
    args = ["--arch", "mlp", "--set", "train.epochs=1", "--set", "train.batch_size=4"]
    assert cli.main(["train", proj, "--quiet", "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: GPU memory ran out during training") and "Traceback" not in "".join(err)


# -- a real GPU ------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_oom_is_retried_with_half_the_batch():
    """Each item allocates 1/48 of the free memory: a batch of 64 cannot fit, 32 can."""
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    per_item = free // 48 // 4  # float32 elements
    seen = []

    def fn(a, b):
        block = torch.ones((b - a, per_item), device="cuda")  # raises torch.OutOfMemoryError at 64
        seen.append(b - a)
        return block[:, :2].sum(dim=1).cpu()  # 2.0 per item: the block was really there

    m = Messages()
    out = torch.cat(run_batched(fn, 128, 64, m.state, what="filling the GPU"))
    assert out.shape == (128,) and torch.all(out == 2.0)
    assert (
        m.info
        and m.info[0] == "GPU memory ran out at batch 64 while filling the GPU; continuing with batch 32."
    )
    assert sum(seen) == 128 and max(seen) <= 32
