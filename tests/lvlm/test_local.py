"""The local back-end on real model folders: tiny random-weight models of each family, built here.

Random weights answer garbage, which is fine for loading, batching, streaming and bookkeeping; the
overfit test trains one folder to answer a fixed JSON and checks that exact text comes back.
"""

import json
import shutil
import time

import pytest
import torch
from fixtures.tiny_lvlm import FAMILIES, chat_request, make_tiny_lvlm, overfit_tiny_lvlm, sample_image

from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState
from lvlmva_desktop.lvlm.backend import Generation, GenerationSettings, LVLMBackend, LVLMError
from lvlmva_desktop.lvlm.local import TESTED_FAMILIES, LocalBackend, folder_hash

FAST = GenerationSettings(max_new_tokens=8, batch_size=3)
TARGET = json.dumps(
    {
        "segments": [
            {"segment": 1, "verdict": "spurious", "reason": "tag"},
            {"segment": 2, "verdict": "relevant", "reason": "lesion"},
        ]
    }
)


def _overlay(im):
    """The same picture with a 'segment overlay' drawn on it (what the critic sends second)."""
    out = im.copy()
    out.paste((255, 0, 0), (4, 4, 14, 14))
    return out


def _requests(n=3):
    """Requests of different lengths, image sizes and system turns, so a batch needs padding."""
    reqs = []
    for i in range(n):
        im = sample_image(i, size=40 + 8 * i)
        system = "You audit image classifiers." if i % 2 else None
        reqs.append(
            chat_request(
                f"Is segment {i + 1} relevant or spurious?" + " Why?" * i, [im, _overlay(im)], system
            )
        )
    return reqs


@pytest.fixture(scope="module", params=FAMILIES)
def backend(request, tiny_lvlm_dirs):
    b = LocalBackend(tiny_lvlm_dirs[request.param], device="cpu")
    yield b
    b.close()


def test_every_tested_family_has_a_tiny_folder():
    assert set(FAMILIES) <= set(TESTED_FAMILIES)
    assert {"qwen2_5_vl", "idefics3", "llava", "gemma3"} <= set(FAMILIES)


def test_folder_loads_and_identity_is_filled(backend, tiny_lvlm_dirs):
    assert isinstance(backend, LVLMBackend)
    ident = backend.identity()
    assert ident["kind"] == "local" and ident["model_type"] in FAMILIES
    assert ident["folder"] == str(tiny_lvlm_dirs[ident["model_type"]])
    assert ident["architecture"].endswith("ForConditionalGeneration")
    assert len(ident["folder_hash"]) == 64
    assert ident["dtype"] == "float32" and ident["device"] == "cpu"
    assert ident["trust_remote_code"] is False and ident["transformers"]
    json.dumps(ident)  # recorded with every critique


def test_generate_with_an_image_and_its_overlay(backend):
    (gen,) = backend.generate(_requests(1), FAST)
    assert isinstance(gen, Generation) and isinstance(gen.text, str)
    assert gen.prompt_tokens > 10 and 1 <= gen.generated_tokens <= FAST.max_new_tokens
    assert gen.finish_reason in ("stop", "length")
    assert gen.text == gen.text.strip()


def test_batched_generation_equals_one_by_one(backend):
    reqs = _requests(3)
    progress = []
    state = TaskState(on_progress=lambda f, m: progress.append(f))
    batched = backend.generate(reqs, FAST, state)
    single = [backend.generate([r], FAST)[0] for r in reqs]
    assert [(g.text, g.generated_tokens, g.prompt_tokens) for g in batched] == [
        (g.text, g.generated_tokens, g.prompt_tokens) for g in single
    ]
    assert progress[-1] == 1.0
    # batches of two (3 requests -> 2 calls) give the same answers again
    again = backend.generate(reqs, GenerationSettings(max_new_tokens=8, batch_size=2))
    assert [g.text for g in again] == [g.text for g in single]


def test_stream_concatenation_equals_generate(backend):
    req = _requests(2)[1]
    settings = GenerationSettings(max_new_tokens=12)
    pieces = list(backend.stream(req, settings))
    assert "".join(pieces) == backend.generate([req], settings)[0].text


def test_health_check_passes(backend):
    rep = backend.health_check()
    assert rep.ok, rep.problem
    assert rep.identity == backend.identity() and rep.device == "CPU"
    assert "GiB" in rep.memory and rep.test_prompt and rep.seconds > 0
    json.dumps(rep.to_dict())


def test_static_cache_gives_the_same_greedy_text(tiny_lvlm_dirs):
    """Checked for every family: all of them support cache_implementation='static' on CPU."""
    for family in FAMILIES:
        folder = tiny_lvlm_dirs[family]
        dynamic = LocalBackend(folder, device="cpu")
        static = LocalBackend(folder, device="cpu", static_cache=True)
        assert not dynamic.static_cache and static.static_cache
        reqs = _requests(2)
        assert [g.text for g in static.generate(reqs, FAST)] == [g.text for g in dynamic.generate(reqs, FAST)]


def test_sampling_is_reproducible_with_a_seed(tiny_lvlm_dirs):
    b = LocalBackend(tiny_lvlm_dirs["qwen2_5_vl"], device="cpu")
    hot = GenerationSettings(max_new_tokens=10, temperature=1.5, seed=3)
    a, c = b.generate(_requests(1), hot)[0], b.generate(_requests(1), hot)[0]
    assert a.text == c.text


def test_cancel_stops_between_batches(tiny_lvlm_dirs):
    b = LocalBackend(tiny_lvlm_dirs["qwen2_5_vl"], device="cpu")
    state = TaskState()
    state.cancel()
    with pytest.raises(Cancelled):
        b.generate(_requests(2), FAST, state)
    seen = []

    def on_progress(frac, msg):
        seen.append(frac)
        if frac > 0:
            state2.cancel()  # cancel once the second batch has started

    state2 = TaskState(on_progress=on_progress)
    with pytest.raises(Cancelled):
        b.generate(_requests(3), GenerationSettings(max_new_tokens=4, batch_size=1), state2)
    assert len(seen) == 2


def test_stream_can_be_abandoned(tiny_lvlm_dirs):
    b = LocalBackend(tiny_lvlm_dirs["qwen2_5_vl"], device="cpu")
    t0 = time.monotonic()
    it = b.stream(_requests(1)[0], GenerationSettings(max_new_tokens=400))
    next(it)
    it.close()  # the chat pane went away: the worker thread must stop, not run 400 tokens
    assert time.monotonic() - t0 < 30


def test_a_broken_request_is_an_lvlm_error(tiny_lvlm_dirs):
    b = LocalBackend(tiny_lvlm_dirs["qwen2_5_vl"], device="cpu")
    bad = [
        {
            "role": "user",
            "content": [{"type": "image", "image": "/no/such/image.png"}, {"type": "text", "text": "?"}],
        }
    ]
    with pytest.raises(LVLMError, match="Generation failed"):
        b.generate([bad], FAST)


# -- errors the expert can act on ---------------------------------------------------------------------------
def _copy(tiny_lvlm_dirs, tmp_path, family="qwen2_5_vl"):
    return shutil.copytree(tiny_lvlm_dirs[family], tmp_path / "model")


def test_missing_folder(tmp_path):
    with pytest.raises(LVLMError, match="does not exist"):
        LocalBackend(tmp_path / "nowhere")


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(LVLMError, match="no config.json"):
        LocalBackend(tmp_path)


def test_unknown_model_type_names_the_type_and_the_tested_families(tiny_lvlm_dirs, tmp_path):
    folder = _copy(tiny_lvlm_dirs, tmp_path)
    (folder / "config.json").write_text(json.dumps({"model_type": "hal9000_vl", "architectures": ["Hal"]}))
    with pytest.raises(LVLMError) as err:
        LocalBackend(folder)
    msg = str(err.value)
    assert "hal9000_vl" in msg and "Qwen2.5-VL (qwen2_5_vl)" in msg and "trust remote code" in msg
    assert "Traceback" not in msg


def test_text_only_model_is_unsupported(tiny_lvlm_dirs, tmp_path):
    folder = _copy(tiny_lvlm_dirs, tmp_path)
    cfg = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_layer": 1,
        "n_embd": 16,
        "n_head": 2,
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LVLMError, match="type 'gpt2'.*image-and-text"):
        LocalBackend(folder)


def test_unreadable_config(tiny_lvlm_dirs, tmp_path):
    folder = _copy(tiny_lvlm_dirs, tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(LVLMError, match="config.json"):
        LocalBackend(folder)


def test_missing_tokenizer_and_processor_files(tiny_lvlm_dirs, tmp_path):
    folder = _copy(tiny_lvlm_dirs, tmp_path)
    (folder / "processor_config.json").unlink()
    with pytest.raises(LVLMError, match="no image processor"):
        LocalBackend(folder)
    folder2 = shutil.copytree(tiny_lvlm_dirs["qwen2_5_vl"], tmp_path / "model2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder2 / name).unlink()
    with pytest.raises(LVLMError, match="no tokenizer"):
        LocalBackend(folder2)


def test_bad_device_and_dtype(tiny_lvlm_dirs):
    folder = tiny_lvlm_dirs["qwen2_5_vl"]
    if not torch.cuda.is_available():
        with pytest.raises(LVLMError, match="no CUDA device"):
            LocalBackend(folder, device="cuda:1")
    with pytest.raises(LVLMError, match="Unknown dtype"):
        LocalBackend(folder, device="cpu", dtype="float8")


def test_trust_remote_code_is_off_by_default_and_recorded(tiny_lvlm_dirs, monkeypatch, caplog):
    """transformers is never asked to run a folder's code unless the user enabled it; when enabled, it is
    logged as a warning and carried in the identity every critique run records."""
    import transformers

    from lvlmva_desktop.lvlm.config import LVLMConfig, open_backend
    from lvlmva_desktop.lvlm.critic import LVLMCritic

    passed: list[object] = []
    for name in ("AutoConfig", "AutoProcessor", "AutoModelForImageTextToText"):
        cls = getattr(transformers, name)
        real = cls.from_pretrained.__func__

        def spy(klass, *args, _real=real, **kwargs):
            passed.append(kwargs.get("trust_remote_code", "absent"))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    folder = tiny_lvlm_dirs["idefics3"]
    with caplog.at_level("WARNING", logger="lvlmva_desktop.lvlm.local"):
        off = open_backend(LVLMConfig(kind="local", folder=str(folder), device="cpu"))
        assert len(passed) >= 3 and set(passed) == {False} and not caplog.records
        n_off = len(passed)
        on = LocalBackend(folder, device="cpu", trust_remote_code=True)
    assert len(passed) >= n_off + 3 and set(passed[n_off:]) == {True}
    assert off.identity()["trust_remote_code"] is False and on.identity()["trust_remote_code"] is True
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "trust_remote_code is enabled" in caplog.text and str(folder) in caplog.text
    assert LVLMCritic(on).identity()["model"]["trust_remote_code"] is True


def test_no_hub_kernels_are_asked_for(backend):
    """transformers >= 5.2x kernelizes models with compute kernels from the Hub unless told not to; the
    program loads every model with use_kernels=False (offline, and only the code the user installed)."""
    assert backend.model.use_kernels is False


def test_pickle_weights_in_a_model_folder_are_read_without_running_code(tiny_lvlm_dirs, tmp_path):
    """A folder with pytorch_model.bin (a pickle) instead of safetensors: transformers reads it with
    weights_only, so an object that would run code on unpickling is refused and never runs."""
    from safetensors.torch import load_file

    folder = _copy(tiny_lvlm_dirs, tmp_path)
    marker = tmp_path / "code-ran"
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save({**weights, "payload": _RunsCodeWhenUnpickled(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(LVLMError, match="could run code, so they were refused") as err:
        LocalBackend(folder, device="cpu")
    assert not marker.exists() and "weights_only" not in str(err.value)  # no advice to switch it off
    torch.save(weights, folder / "pytorch_model.bin")  # plain tensors in a pickle: read with weights_only
    assert LocalBackend(folder, device="cpu").identity()["folder_hash"]
    assert not marker.exists()


class _RunsCodeWhenUnpickled:
    """Unpickling this object would create ``marker`` (what a malicious checkpoint does)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_oom_in_a_batch_halves_it_keeps_the_answers_and_says_so(tiny_lvlm_dirs):
    """The answers equal those of an unconstrained run; only the batches after the failure are smaller."""
    b = LocalBackend(tiny_lvlm_dirs["qwen2_5_vl"], device="cpu")
    reqs = _requests(5)
    settings = GenerationSettings(max_new_tokens=6, batch_size=4)
    want = [g.text for g in b.generate(reqs, settings)]
    real_run, sizes = b._run, []

    def small_gpu(inputs, s, **extra):
        n = inputs["input_ids"].shape[0]
        if n > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (injected)")
        sizes.append(n)
        return real_run(inputs, s, **extra)

    b._run = small_gpu
    messages: list[str] = []
    got = b.generate(reqs, settings, TaskState(on_message=messages.append))
    assert [g.text for g in got] == want
    assert sizes == [2, 2, 1]  # requests 0-1, 2-3 (the failed batch of 4, halved), then the last one
    assert messages == [
        "GPU memory ran out at batch 4 while generating LVLM answers; continuing with batch 2."
    ]

    def no_memory_at_all(inputs, s, **extra):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    b._run = no_memory_at_all
    with pytest.raises(LVLMError, match="Out of memory on CPU while generating even one answer"):
        b.generate(reqs[:2], settings)


def test_folder_hash_changes_when_weights_change(tiny_lvlm_dirs, tmp_path):
    folder = _copy(tiny_lvlm_dirs, tmp_path)
    before = LocalBackend(folder, device="cpu").identity()["folder_hash"]
    assert folder_hash(folder) == before
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # one byte of the last tensor
    weights.write_bytes(bytes(data))
    assert folder_hash(folder) != before
    # the hash is of the content, wherever the folder lies (even under a hidden folder such as ~/.cache)
    hidden = shutil.copytree(folder, tmp_path / ".cache" / "model")
    assert folder_hash(hidden) == folder_hash(folder) != folder_hash(tmp_path / "empty")
    # a large shard is sampled, not read whole: its edges still count
    big = folder / "model-00002-of-00002.safetensors"
    big.write_bytes(bytes(9 * 2**20))
    h1 = folder_hash(folder)
    with big.open("r+b") as f:
        f.seek(9 * 2**20 - 10)
        f.write(b"\x01")
    assert folder_hash(folder) != h1


def test_close_frees_the_model(tiny_lvlm_dirs):
    b = LocalBackend(tiny_lvlm_dirs["llava"], device="cpu")
    b.close()
    assert b.model is None and b.identity()["model_type"] == "llava"
    with pytest.raises(LVLMError, match="closed"):
        b.generate(_requests(1), FAST)
    assert not b.health_check().ok


# -- a trained folder answers exactly ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def overfit_dir(tmp_path_factory):
    folder = make_tiny_lvlm("qwen2_5_vl", tmp_path_factory.mktemp("overfit") / "qwen")
    overfit_tiny_lvlm(folder, TARGET)
    return folder


def test_overfit_model_answers_the_target_to_unseen_prompts(overfit_dir):
    b = LocalBackend(overfit_dir, device="cpu")
    settings = GenerationSettings(max_new_tokens=80, batch_size=4)
    im = sample_image(4242, size=56)
    unseen = [
        chat_request("Judge segments 1 and 2 of this melanoma image; reply in JSON.", [im, _overlay(im)]),
        chat_request("Hello?", [sample_image(77, 30)], "You are a careful auditor."),
        chat_request(
            "The image, its evidence map and its numbered segments. The class is melanoma; the expert judges it "
            "by the lesion's border and colours. Segment 1 holds 60% of the evidence, around the top left; "
            "segment 2 holds 40%, around the centre. Reason step by step, then give one verdict per segment.",
            [sample_image(k, 36 + 4 * k) for k in range(3)],
        ),
    ]
    gens = b.generate(unseen, settings)
    assert [g.text for g in gens] == [TARGET] * 3
    assert all(g.finish_reason == "stop" for g in gens)
    assert "".join(b.stream(unseen[0], settings)) == TARGET
    short = b.generate(unseen[:1], GenerationSettings(max_new_tokens=5))[0]
    assert short.finish_reason == "length" and short.generated_tokens == 5


# -- on a GPU ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_generation(tiny_lvlm_dirs, family):
    b = LocalBackend(tiny_lvlm_dirs[family], device="cuda", static_cache=False)
    ident = b.identity()
    assert ident["device"].startswith("cuda")
    assert ident["dtype"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    gens = b.generate(_requests(3), FAST)
    assert len(gens) == 3 and all(g.generated_tokens >= 1 for g in gens)
    assert "".join(b.stream(_requests(1)[0], FAST)) == b.generate(_requests(1), FAST)[0].text
    rep = b.health_check()
    assert rep.ok and "GPU" in rep.memory, rep.problem
    b.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_default_static_cache_answers_the_target(overfit_dir):
    """The CUDA default: bf16 and a static cache (transformers then compiles the decoding step)."""
    b = LocalBackend(overfit_dir, device="cuda")
    assert b.static_cache
    settings = GenerationSettings(max_new_tokens=80, batch_size=2)
    for _ in range(2):  # the second call reuses the compiled graph
        gens = b.generate(_requests(3), settings)
        assert [g.text for g in gens] == [TARGET] * 3
    b.close()
