"""LVLM benchmarks (issue 3): one-call vs two-call critiques, and critique throughput on a GPU.

modes       runs the critique of a small ISIC-like alignment set twice through the real critic path, in
            two-call mode (critic + judge) and in one-call mode, and prints LVLM calls, tokens, time and the
            per-segment agreement of the verdicts. The model is a folder you give (--model-dir) or a tiny
            random-weight one built here (--family): with random weights the figures for calls and tokens are
            real, the agreement is not informative (most verdicts are "undecided").
throughput  images per minute and generated tokens per second for critiques with a model of the
            Qwen2.5-VL-7B (or 3B) shape and random weights, at batch 1 and larger batches, with a fixed
            number of generated tokens; compared with the memory-bandwidth bound (language-model weight
            bytes / measured device bandwidth per decoding step). Needs CUDA except with --shape tiny.

    python benchmarks/lvlm.py modes --family qwen2_5_vl
    python benchmarks/lvlm.py modes --model-dir /models/SmolVLM-Instruct
    python benchmarks/lvlm.py throughput --shape 7b --batches 1 8 32 [--profile]

throughput prints, per batch size, the warm-up time (the first call, where torch compiles the decoding step
for the static cache) apart from the timed call; --profile then profiles one more call at the largest batch
and prints where the GPU time goes (top kernels) and how often the host waited for the device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import ROOT

sys.path.insert(0, str(ROOT / "tests"))  # the tiny-model builders live with the test fixtures

SHAPES = {  # published Qwen2.5-VL language-model shapes; the vision tower is the real 32-block one
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, head_dim=128),
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, head_dim=128),
    "tiny": None,
}  # fmt: skip
VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, fullatt_block_indexes=[7, 15, 23, 31],
              window_size=112)  # fmt: skip


# -- modes ------------------------------------------------------------------------------------------------
def _small_project(folder: Path) -> Path:
    from lvlmva_desktop.cli import main

    data, proj = folder / "data", folder / "proj"
    fast = ["--set", "train.epochs=2", "--set", "sampling.n=16", "--quiet", "--device", "cpu"]
    steps = [
        ["generate", "isic-like", str(data), "--quiet", "--param", "n_train=96", "--param", "n_test=32",
         "--param", "size=32"],
        ["import", str(proj), "--csv", str(data / "manifest.csv"), "--quiet", "--image-size", "32"],
        ["describe", str(proj), "--defaults", "isic-like"],
        ["train", str(proj), *fast],
        ["sample", str(proj), *fast],
        ["explain", str(proj), *fast],
    ]  # fmt: skip
    for s in steps:
        if main(s) != 0:
            raise SystemExit(f"set-up step failed: {' '.join(s)}")
    return proj


def modes(args) -> None:
    from lvlmva_desktop.core.method.pipeline import critique_requests
    from lvlmva_desktop.core.store.project import Project
    from lvlmva_desktop.lvlm.critic import CriticSettings, LVLMCritic
    from lvlmva_desktop.lvlm.local import LocalBackend
    from lvlmva_desktop.lvlm.prompts import TemplateSet

    tmp = Path(tempfile.mkdtemp(prefix="lvlmva-lvlm-bench-"))
    folder = args.model_dir
    if folder is None:
        from fixtures.tiny_lvlm import make_tiny_lvlm

        folder = make_tiny_lvlm(args.family, tmp / "model")
    proj = _small_project(tmp)
    backend = LocalBackend(folder, device=args.device)
    print(f"model: {json.dumps(backend.identity())}")
    with Project.open(proj) as p:
        reqs = critique_requests(p, p.latest_id("explanations"))[: args.images]
        ts = TemplateSet.for_project(p)
    rows = {}
    for one_call in (False, True):
        s = CriticSettings(one_call=one_call, use_cache=False, critic_max_new_tokens=args.max_new_tokens,
                           batch_size=args.batch_size)  # fmt: skip
        t0 = time.perf_counter()
        crits = list(LVLMCritic(backend, ts, s).critique(reqs))
        dt = time.perf_counter() - t0
        rows["one-call" if one_call else "two-call"] = {
            "calls": sum(c.raw["calls"] for c in crits),
            "prompt_tokens": sum(c.raw["prompt_tokens"] for c in crits),
            "generated_tokens": sum(c.raw["generated_tokens"] for c in crits),
            "seconds": dt,
            "verdicts": [[v.verdict for v in c.verdicts] for c in crits],
        }
    a, b = rows["two-call"]["verdicts"], rows["one-call"]["verdicts"]
    pairs = [(x, y) for va, vb in zip(a, b) for x, y in zip(va, vb)]
    decided = [(x, y) for x, y in pairs if x != "undecided" and y != "undecided"]
    print(f"\n{len(reqs)} images, {len(pairs)} segments, device {backend.identity()['device']}")
    print(
        f"{'mode':10s} {'calls':>6s} {'prompt tok':>11s} {'gen tok':>8s} {'seconds':>8s} {'undecided':>10s}"
    )
    for name, r in rows.items():
        und = sum(v == "undecided" for vs in r["verdicts"] for v in vs)
        print(f"{name:10s} {r['calls']:6d} {r['prompt_tokens']:11d} {r['generated_tokens']:8d} "
              f"{r['seconds']:8.1f} {und:10d}")  # fmt: skip
    same = sum(x == y for x, y in pairs) / max(len(pairs), 1)
    same_dec = sum(x == y for x, y in decided) / len(decided) if decided else float("nan")
    print(f"verdict agreement one-call vs two-call: {same:.3f} of all segments; {same_dec:.3f} of the "
          f"{len(decided)} segments both modes decided")  # fmt: skip
    backend.close()


# -- throughput -------------------------------------------------------------------------------------------
def _bandwidth(device: torch.device) -> float:
    """Bytes per second of a large device-to-device copy (reads + writes)."""
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(2):
        b.copy_(a)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    reps = 10
    for _ in range(reps):
        b.copy_(a)
    torch.cuda.synchronize(device)
    bw = 2 * n * reps / (time.perf_counter() - t0)
    del a, b
    torch.cuda.empty_cache()
    return bw


def _backend_for_shape(shape: str, device: torch.device, static_cache: bool, tmp: Path):
    from fixtures.tiny_lvlm import make_tiny_lvlm
    from transformers import AutoConfig, AutoModelForImageTextToText

    from lvlmva_desktop.lvlm.local import LocalBackend

    tiny = make_tiny_lvlm("qwen2_5_vl", tmp / "tiny")
    if shape == "tiny":
        return LocalBackend(tiny, device=str(device), static_cache=static_cache), 0
    # the tiny folder's processor and special tokens, with the real model's dimensions
    cfg = AutoConfig.from_pretrained(tiny, local_files_only=True)
    for k, v in SHAPES[shape].items():
        setattr(cfg.text_config, k, v)
    cfg.text_config.layer_types = ["full_attention"] * SHAPES[shape]["num_hidden_layers"]
    cfg.text_config.vocab_size = 152064
    cfg.text_config.rope_parameters = {
        "mrope_section": [16, 24, 24],
        "rope_theta": 1e6,
        "rope_type": "default",
    }
    for k, v in VISION.items():
        setattr(cfg.vision_config, k, v)
    cfg.vision_config.out_hidden_size = SHAPES[shape]["hidden_size"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(cfg, dtype=dtype)
    model.eval()
    folder = tmp / shape
    model.save_pretrained(folder, safe_serialization=True)
    lm_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "visual" not in n)
    del model
    torch.cuda.empty_cache()
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny, local_files_only=True)
    proc.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}
    proc.save_pretrained(folder)
    return LocalBackend(folder, device=str(device), static_cache=static_cache), lm_bytes


def throughput(args) -> None:
    from fixtures.tiny_lvlm import sample_image

    from lvlmva_desktop.core.runtime.devices import describe_device, resolve_device
    from lvlmva_desktop.lvlm.backend import GenerationSettings, user_message

    device = resolve_device(args.device)
    if device.type != "cuda" and args.shape != "tiny":
        raise SystemExit(
            "The throughput benchmark needs a CUDA device for the 3B/7B shapes (try --shape tiny)."
        )
    tmp = Path(tempfile.mkdtemp(prefix="lvlmva-throughput-"))
    t0 = time.perf_counter()
    backend, lm_bytes = _backend_for_shape(args.shape, device, not args.no_static_cache, tmp)
    print(f"device: {describe_device(device)}; shape {args.shape}; static cache {backend.static_cache}; "
          f"model ready in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    filler = " ".join(["The classifier's evidence covers the segments numbered on the overlay."] * 200)

    def requests(n: int):
        out = []
        for i in range(n):
            req = [user_message(filler, [sample_image(i, size=336)])]
            out.append(req)
        return out

    # trim the text so that one request has about --prompt-tokens tokens
    probe = backend.generate(requests(1), GenerationSettings(max_new_tokens=1, batch_size=1))[0]
    words = filler.split(" ")
    keep = max(1, int(len(words) * min(1.0, args.prompt_tokens / max(probe.prompt_tokens, 1))))
    filler = " ".join(words[:keep])
    bound = None
    if device.type == "cuda" and lm_bytes:
        bw = _bandwidth(device)
        bound = lm_bytes / bw
        print(f"language-model weights {lm_bytes / 1e9:.2f} GB; measured bandwidth {bw / 1e12:.2f} TB/s; "
              f"bound {bound * 1e3:.2f} ms per decoding step")  # fmt: skip
    print(f"{'batch':>5s} {'prompt':>7s} {'new':>4s} {'warm-up s':>9s} {'prefill s':>9s} {'total s':>8s} "
          f"{'ms/step':>8s} {'tok/s':>8s} {'img/min':>8s} {'of bound':>8s}")  # fmt: skip
    for b in args.batches:
        reqs = requests(b)
        gs_full = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=b, ignore_eos=True)
        gs_pre = GenerationSettings(max_new_tokens=1, batch_size=b)
        try:
            t = time.perf_counter()
            for _ in range(2):  # warm-up (compilation for the static cache happens here)
                backend.generate(reqs, gs_full)
            _sync(device)
            t_warm = time.perf_counter() - t
            t = time.perf_counter()
            backend.generate(reqs, gs_pre)
            _sync(device)
            t_pre = time.perf_counter() - t
            t = time.perf_counter()
            outs = backend.generate(reqs, gs_full)
            _sync(device)
            t_all = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001
            print(f"{b:5d} failed: {e}")
            continue
        new = min(o.generated_tokens for o in outs)
        step = (t_all - t_pre) / max(new - 1, 1)
        ratio = f"{bound / step:8.0%}" if bound else "     n/a"
        print(f"{b:5d} {outs[0].prompt_tokens:7d} {new:4d} {t_warm:9.1f} {t_pre:9.2f} {t_all:8.2f} "
              f"{step * 1e3:8.1f} {b * new / t_all:8.0f} {60 * b / t_all:8.1f} {ratio}")  # fmt: skip
    if args.profile:
        _profile(backend, requests(max(args.batches)), args.new_tokens, device)
    backend.close()


def _profile(backend, reqs, new_tokens: int, device: torch.device) -> None:
    """One more generate call under torch.profiler: the top device kernels and the host-side waits."""
    from torch.profiler import ProfilerActivity, profile

    from lvlmva_desktop.lvlm.backend import GenerationSettings

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    gs = GenerationSettings(max_new_tokens=new_tokens, batch_size=len(reqs), ignore_eos=True)
    with profile(activities=acts) as prof:
        backend.generate(reqs, gs)
        _sync(device)
    events = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"profile of one call at batch {len(reqs)}, {new_tokens} new tokens; top operations by {key}:")
    print(events.table(sort_by=key, row_limit=20, max_name_column_width=60))
    waits = {e.key: e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
             "cudaMemcpyAsync", "cudaEventSynchronize", "aten::item", "aten::_local_scalar_dense")}  # fmt: skip
    launches = sum(
        e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch")
    )
    print(
        f"host waits and copies: {waits}; kernel or graph launches: {launches} "
        f"({launches / max(new_tokens, 1):.0f} per decoding step)"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("modes")
    m.add_argument("--model-dir")
    m.add_argument("--family", default="qwen2_5_vl")
    m.add_argument("--images", type=int, default=8)
    m.add_argument("--max-new-tokens", type=int, default=256)
    m.add_argument("--batch-size", type=int, default=8)
    m.add_argument("--device", default="auto")
    t = sub.add_parser("throughput")
    t.add_argument("--shape", choices=list(SHAPES), default="7b")
    t.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    t.add_argument("--prompt-tokens", type=int, default=1024)
    t.add_argument("--new-tokens", type=int, default=128)
    t.add_argument("--no-static-cache", action="store_true")
    t.add_argument("--profile", action="store_true", help="profile one more call at the largest batch")
    t.add_argument("--device", default="auto")
    args = ap.parse_args()
    modes(args) if args.what == "modes" else throughput(args)


if __name__ == "__main__":
    main()
