"""A transformers vision-language model folder on this machine, behind the ``LVLMBackend`` interface.

The folder is loaded exactly as transformers would load it for anyone (``AutoProcessor`` and
``AutoModelForImageTextToText`` with ``local_files_only``), so any model family transformers supports works;
the families in ``TESTED_FAMILIES`` are the ones the test suite checks. Prompts go through the model's own
chat template; many requests are generated in left-padded batches, greedy unless a temperature is asked for,
so an answer does not depend on which batch it was in (in float32; bf16 on a GPU can differ in rare ties).
A model whose processor refuses a prompt without an image (PaliGemma; found by a dry run of its processor at
load, whatever the family) gets a blank grey picture with each text-only request (judge, strict retry,
class summary), which its identity records.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from lvlmva_desktop.core.runtime.devices import describe_device, resolve_device
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.runtime.memory import GPUOutOfMemory, collect_garbage, is_out_of_memory, run_batched
from lvlmva_desktop.lvlm.backend import (
    ChatRequest,
    Generation,
    GenerationSettings,
    HealthReport,
    LVLMError,
    request_images,
    text_message,
    user_message,
)

log = logging.getLogger(__name__)

# model_type -> family name: the families the test suite builds and runs (others may work but are untested).
TESTED_FAMILIES = {
    "qwen2_vl": "Qwen2-VL",
    "qwen2_5_vl": "Qwen2.5-VL",
    "qwen3_vl": "Qwen3-VL",
    "idefics3": "Idefics3 / SmolVLM",
    "smolvlm": "SmolVLM2",
    "llava": "LLaVA",
    "gemma3": "Gemma 3",
    "paligemma": "PaliGemma",
}
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}  # fmt: skip
# What a text-only request carries to a model whose processor demands an image with every prompt (PaliGemma):
# a plain mid-grey picture, the same every time (so answers stay reproducible and cacheable).
BLANK_IMAGE_SIZE = 64
_SMALL_FILE = 8 * 2**20  # hashed whole; larger (weight) files are sampled, see folder_hash()
_SAMPLE = 2**20


def folder_hash(folder: Path) -> str:
    """sha256 over every file of the folder (sorted relative names; hidden files skipped): name, size and
    content hash. Files up to 8 MiB (configs, tokenizer, processor, chat template, small weights) are hashed
    whole; larger files (weight shards) by their first and last 1 MiB plus 16 evenly spaced 64 KiB samples,
    so a multi-GB folder hashes in milliseconds and any re-saved or fine-tuned shard still changes it."""
    h, files = hashlib.sha256(), []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append((rel.as_posix(), path))
    for rel, path in sorted(files):
        size = path.stat().st_size
        fh = hashlib.sha256()
        with path.open("rb") as f:
            if size <= _SMALL_FILE:
                fh.update(f.read())
            else:
                offsets = [0, size - _SAMPLE] + [size * k // 17 for k in range(1, 17)]
                for off in offsets:
                    f.seek(off)
                    fh.update(f.read(_SAMPLE if off in (0, size - _SAMPLE) else 2**16))
        h.update(f"{rel}\0{size}\0{fh.hexdigest()}\n".encode())
    return h.hexdigest()


def blank_image():
    """The picture a text-only request carries to a model that needs an image with every prompt."""
    from PIL import Image

    return Image.new("RGB", (BLANK_IMAGE_SIZE, BLANK_IMAGE_SIZE), (128, 128, 128))


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """bf16 on a GPU that supports it (half the memory, same range as fp32), float32 otherwise."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise LVLMError(f"Unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16.")
    return _DTYPES[dtype]


def _tested_list() -> str:
    return ", ".join(f"{name} ({mt})" for mt, name in TESTED_FAMILIES.items())


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


class _StopFlag:
    """A stopping criterion that ends generation when the streaming consumer went away."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _TokenProbs:
    """A logits processor that records, for every generated token, its probability under the softmax over
    the whole vocabulary of that step's scores (the model's logits after any penalty the folder's generation
    config asks for, before a sampling temperature: for greedy decoding, the distribution the token was the
    most likely of). A step's distribution is kept only until the next step shows which token was chosen, so
    the memory is one (batch, vocabulary) array, not one per step (``output_scores`` keeps them all: about a
    gigabyte for eight 200-token answers of a 150,000-token vocabulary)."""

    def __init__(self) -> None:
        self._last: torch.Tensor | None = None
        self._probs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._last is not None:  # the token chosen at the previous step is the last one of input_ids
            self._probs.append(self._last.gather(1, input_ids[:, -1:]).squeeze(1))
        self._last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, seqs: torch.Tensor, prompt_len: int) -> torch.Tensor:
        """(batch, generated tokens) probabilities, once generation is over (``seqs``: its output)."""
        t = prompt_len + len(self._probs)
        if self._last is not None and seqs.shape[1] > t:
            self._probs.append(self._last.gather(1, seqs[:, t : t + 1].to(self._last.device)).squeeze(1))
        self._last = None
        if not self._probs:
            return torch.zeros(seqs.shape[0], 0)
        return torch.stack(self._probs, 1).exp().cpu()


def compiler_available() -> bool:
    """Whether torch.compile can build GPU kernels here: triton is installed and this is not a frozen build."""
    import importlib.util

    return not getattr(sys, "frozen", False) and importlib.util.find_spec("triton") is not None


class LocalBackend:
    """A model folder loaded with transformers on a chosen device."""

    def __init__(
        self,
        folder: str | Path,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        state: TaskState | None = None,
        static_cache: bool | None = None,
    ) -> None:
        state = ensure_state(state)
        self.folder = Path(folder).expanduser()
        self.trust_remote_code = bool(trust_remote_code)
        if self.trust_remote_code:  # recorded in identity() too, hence in every critique run's settings
            log.warning(
                "trust_remote_code is enabled for %s: Python code shipped with the model may run", self.folder
            )
        try:
            self.device = resolve_device(device)
        except (ValueError, RuntimeError) as exc:
            raise LVLMError(str(exc)) from None
        self.dtype = _pick_dtype(dtype, self.device)
        # A static KV cache lets generate() compile one graph per shape: a throughput gain on a GPU only,
        # and only where torch's compiler can run (not in the packaged build, which leaves triton out).
        if static_cache is None:
            static_cache = self.device.type == "cuda" and compiler_available()
        self.static_cache = bool(static_cache)
        state.progress(0, 3, f"Checking {self.folder}")
        config = self._read_config()
        self.model_type = str(getattr(config, "model_type", ""))
        archs = getattr(config, "architectures", None) or []
        state.check()
        state.progress(1, 3, "Loading the processor (tokenizer, image processor, chat template)")
        self.processor = self._load_processor()
        state.check()
        state.progress(2, 3, f"Loading the weights onto {describe_device(self.device)}")
        self.model = self._load_model()
        self.architecture = archs[0] if archs else type(self.model).__name__
        self._prepare_tokenizer()
        # True when the processor refuses a prompt without an image: text-only requests (the judge, the
        # strict retry, the class summary) then get a blank picture (see _with_images)
        self.image_required = self._needs_image()
        self._lock = threading.Lock()
        self._hash = folder_hash(self.folder)
        state.progress(3, 3, "Model loaded")
        log.info("Loaded %s (%s) from %s on %s as %s", self.architecture, self.model_type, self.folder,
                 self.device, self.dtype)  # fmt: skip

    # -- loading --------------------------------------------------------------------------------------
    def _read_config(self):
        from transformers import AutoConfig

        if not self.folder.is_dir():
            raise LVLMError(f"The model folder {self.folder} does not exist.")
        if not (self.folder / "config.json").is_file():
            raise LVLMError(
                f"{self.folder} has no config.json: choose the folder that holds the model's config.json, "
                "tokenizer and *.safetensors weights (as downloaded from the model's page)."
            )
        try:
            remote = self.trust_remote_code
            return AutoConfig.from_pretrained(self.folder, local_files_only=True, trust_remote_code=remote)
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; the user needs words
            raise LVLMError(self._unsupported(exc)) from None

    def _unsupported(self, exc: Exception) -> str:
        import json

        try:
            model_type = json.loads((self.folder / "config.json").read_text("utf-8")).get("model_type", "?")
        except (OSError, ValueError):
            return f"The config.json in {self.folder} cannot be read ({exc})."
        hint = (
            " It may need the model's own code: enable 'trust remote code' only if you trust its source."
            if not self.trust_remote_code
            else ""
        )
        return (
            f"The model in {self.folder} is of type '{model_type}', which this transformers "
            f"({_transformers_version()}) cannot load as an image-and-text model.{hint} Tested families: "
            f"{_tested_list()}. (Details: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        )

    def _load_processor(self):
        from transformers import AutoProcessor

        names = {p.name for p in self.folder.iterdir()}
        if not names & {"tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json"}:
            raise LVLMError(f"{self.folder} has no tokenizer files (tokenizer.json or tokenizer.model).")
        if not names & {"preprocessor_config.json", "processor_config.json"}:
            raise LVLMError(
                f"{self.folder} has no image processor settings (preprocessor_config.json or "
                "processor_config.json): is it a vision-language model?"
            )
        try:
            remote = self.trust_remote_code
            proc = AutoProcessor.from_pretrained(self.folder, local_files_only=True, trust_remote_code=remote)
        except Exception as exc:  # noqa: BLE001
            raise LVLMError(f"The processor in {self.folder} cannot be loaded: {exc}") from None
        if not hasattr(proc, "tokenizer") or not hasattr(proc, "image_processor"):
            raise LVLMError(f"{self.folder} has no image processor: is it a vision-language model?")
        if not getattr(proc, "chat_template", None) and not getattr(proc.tokenizer, "chat_template", None):
            raise LVLMError(
                f"{self.folder} has no chat template (chat_template.jinja or in tokenizer_config.json)."
            )
        return proc

    def _load_model(self):
        from transformers import AutoModelForImageTextToText

        # use_kernels=False: transformers >= 5.2x kernelizes a model by default with compute kernels it
        # fetches from the Hub (the `kernels` package): a network path and code this program never asked for.
        kwargs: dict[str, Any] = dict(
            dtype=self.dtype, trust_remote_code=self.trust_remote_code, use_kernels=False
        )
        if self.device.type == "cuda":
            kwargs["device_map"] = {"": str(self.device)}
        try:
            model = AutoModelForImageTextToText.from_pretrained(self.folder, local_files_only=True, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if _is_oom(exc):
                raise LVLMError(self._oom_words("loading the model")) from None
            if isinstance(exc, ValueError) and "Unrecognized configuration class" in str(exc):
                raise LVLMError(self._unsupported(exc)) from None
            if "weights only load failed" in str(exc).lower():  # transformers reads *.bin weights_only
                raise LVLMError(
                    f"The weights in {self.folder} are a pickle checkpoint holding Python objects besides "
                    "tensors; loading them could run code, so they were refused. Use the model's "
                    "*.safetensors files (or a checkpoint of plain tensors)."
                ) from None
            raise LVLMError(f"The weights in {self.folder} cannot be loaded: {exc}") from None
        if self.device.type != "cuda":
            model.to(self.device)
        if self.model_type not in TESTED_FAMILIES:
            log.warning(
                "Model type '%s' is not among the tested families (%s)", self.model_type, _tested_list()
            )
        return model.eval()

    def _prepare_tokenizer(self) -> None:
        """Left padding so that every row of a batch ends where its answer starts."""
        tok = self.processor.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        eos = self.model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        if tok.eos_token_id is not None and tok.eos_token_id not in eos:
            eos.append(tok.eos_token_id)
        self._eos = set(eos)
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)

    def _needs_image(self) -> bool:
        """Whether the processor refuses a text-only prompt that it accepts with an image (PaliGemma's
        "images are expected"): a dry run of the chat template and processor, no model call."""
        text_only = [[text_message("user", "Hello.")]]
        try:
            self._encode(text_only)
            return False
        except Exception:  # noqa: BLE001 - whatever refuses it; the same prompt with an image decides
            pass
        try:
            self._encode([[user_message("Hello.", [blank_image()])]])
        except Exception:  # noqa: BLE001 - broken either way: generation will say why, in words
            return False
        log.info("The processor of %s needs an image with every prompt: text-only requests get a blank one",
                 self.folder)  # fmt: skip
        return True

    def _with_images(self, requests: Sequence[ChatRequest]) -> list[ChatRequest]:
        """The requests as the model can take them: for a model that needs an image with every prompt, a
        request without one gets a blank picture at the start of its first user turn (the text unchanged)."""
        out = [list(r) for r in requests]
        if not getattr(self, "image_required", False):
            return out
        for r in out:
            if request_images(r):
                continue
            at = next((i for i, m in enumerate(r) if m.get("role") == "user"), None)
            if at is None:
                r.append(user_message("", [blank_image()]))
                continue
            content = r[at]["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            r[at] = {**r[at], "content": [{"type": "image", "image": blank_image()}, *parts]}
        return out

    def _oom_words(self, what: str) -> str:
        return (
            f"Out of memory on {describe_device(self.device)} while {what}. Use a smaller model, a smaller "
            "batch size, fewer or smaller images, or another device."
        )

    # -- LVLMBackend ----------------------------------------------------------------------------------
    def identity(self) -> dict:
        ident = {
            "kind": "local",
            "folder": str(self.folder),
            "model_type": self.model_type,
            "architecture": self.architecture,
            "folder_hash": self._hash,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "trust_remote_code": self.trust_remote_code,
            "transformers": _transformers_version(),
        }
        if getattr(self, "image_required", False):  # what its text-only answers were given (keys the cache)
            ident["text_requests"] = f"with a blank {BLANK_IMAGE_SIZE} px grey image"
        return ident

    def _inputs(self, requests: Sequence[ChatRequest]) -> dict:
        """The requests through the model's own chat template and processor, padded on the left (a blank
        image added where the model needs one), as tensors on the model's device."""
        enc = self._encode(self._with_images(requests))
        return {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in enc.items() if isinstance(v, torch.Tensor) and k != "labels"}  # fmt: skip

    def _encode(self, requests: Sequence[ChatRequest]):
        """The processor's output for the requests (chat template applied, left-padded)."""
        template = self.processor.apply_chat_template
        padding = (  # transformers 5 wants processor options in their own dict
            {"processor_kwargs": {"padding": True}}
            if "processor_kwargs" in inspect.signature(template).parameters
            else {"padding": True}
        )
        enc = template(
            [list(r) for r in requests],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **padding,
        )
        return enc

    def _gen_kwargs(self, settings: GenerationSettings, prompt_len: int) -> dict:
        kw: dict[str, Any] = dict(max_new_tokens=settings.max_new_tokens, pad_token_id=self._pad)
        if settings.temperature > 0:
            kw.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
        else:  # greedy, whatever the folder's generation_config.json says about sampling
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings.ignore_eos:  # benchmarks: a fixed number of decoding steps
            kw["min_new_tokens"] = settings.max_new_tokens
        if self.static_cache:
            # Sized in steps of 1024 (transformers never shrinks it): few shapes, so few recompilations.
            kw["cache_implementation"] = "static"
            kw["max_cache_len"] = -(-(prompt_len + settings.max_new_tokens) // 1024) * 1024
        return kw

    def generate(
        self,
        requests: Sequence[ChatRequest],
        settings: GenerationSettings | None = None,
        state: TaskState | None = None,
    ) -> list[Generation]:
        """Answers in order, ``settings.batch_size`` requests per model call; cancellable between calls.

        On GPU out-of-memory the batch is halved for the rest of the call and the answers already generated
        are kept (core/runtime/memory.py); the answers do not depend on the batching (greedy, left padding)."""
        settings, state = settings or GenerationSettings(), ensure_state(state)
        n, size = len(requests), max(1, settings.batch_size)

        def batch(start: int, stop: int) -> list[Generation]:
            state.progress(start, n, f"Generating answers {start + 1}-{stop} of {n}")
            return self._generate_batch(requests[start:stop], settings)

        try:
            parts = run_batched(batch, n, size, state, what="generating LVLM answers", report_progress=False)
        except GPUOutOfMemory:
            raise LVLMError(self._oom_words("generating even one answer at a time")) from None
        state.progress(n, n, f"Generated {n} answers")
        return [g for part in parts for g in part]

    def _run(self, inputs: dict, settings: GenerationSettings, **extra: Any) -> torch.Tensor:
        """One model.generate call; one at a time (the chat pane may stream while the critic runs)."""
        if self.model is None:
            raise LVLMError("The model was closed; load it again to generate.")
        with self._lock, torch.inference_mode():
            if settings.temperature > 0:
                torch.manual_seed(settings.seed)  # reproducible sampling; greedy leaves the global RNG alone
            return self.model.generate(
                **inputs, **self._gen_kwargs(settings, inputs["input_ids"].shape[1]), **extra
            )

    def _failed(self, exc: Exception, what: str) -> LVLMError:
        if _is_oom(exc):
            self._free_cache()
            return LVLMError(self._oom_words(what))
        if isinstance(exc, LVLMError):
            return exc
        return LVLMError(f"Generation failed ({self.model_type}): {type(exc).__name__}: {exc}")

    def _generate_batch(
        self, requests: Sequence[ChatRequest], settings: GenerationSettings
    ) -> list[Generation]:
        try:
            if self.model is None:
                raise LVLMError("The model was closed; load it again to generate.")
            inputs = self._inputs(requests)
            recorder = _TokenProbs() if settings.token_probs else None
            extra = {}
            if recorder is not None:
                from transformers import LogitsProcessorList

                extra["logits_processor"] = LogitsProcessorList([recorder])
            seqs = self._run(inputs, settings, **extra)
        except Exception as exc:  # noqa: BLE001 - the user needs words, not a traceback
            if is_out_of_memory(exc):
                raise  # generate() retries with a smaller batch
            raise self._failed(exc, f"generating for {len(requests)} requests") from exc
        prompt_len = inputs["input_ids"].shape[1]
        probs = recorder.finish(seqs, prompt_len) if recorder is not None else None
        results = []
        for b, (row, mask) in enumerate(zip(seqs[:, prompt_len:].tolist(), inputs["attention_mask"])):
            stop = next((i for i, t in enumerate(row) if t in self._eos), None)
            ids = row if stop is None else row[: stop + 1]
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
            token_probs = None
            if probs is not None:
                ends = self._token_ends(ids, text)
                token_probs = [(e, float(p)) for e, p in zip(ends, probs[b, : len(ids)].tolist())]
            results.append(
                Generation(
                    text=text.strip(),
                    prompt_tokens=int(mask.sum()),
                    generated_tokens=len(ids),
                    finish_reason="stop" if stop is not None else "length",
                    token_probs=token_probs,
                )
            )
        return results

    def _token_ends(self, ids: list[int], full: str) -> list[int]:
        """Where each token of ``ids`` ends in the stripped answer (``full``: their decoded text, unstripped):
        the length of the decoded prefix up to it, as far as it agrees with the whole text (a token that ends
        inside a multi-byte character ends where the last whole character does)."""
        import os.path

        prefixes = self.processor.tokenizer.batch_decode(
            [ids[: i + 1] for i in range(len(ids))], skip_special_tokens=True
        )
        lead = len(full) - len(full.lstrip())
        size = len(full.strip())
        ends, reach = [], 0
        for pre in prefixes:
            n = len(pre) if full.startswith(pre) else len(os.path.commonprefix([pre, full]))
            reach = max(reach, n)
            ends.append(min(max(reach - lead, 0), size))
        return ends

    def stream(self, request: ChatRequest, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Pieces of the answer as they are generated; their concatenation is generate()'s text (stripped).
        Closing the iterator early stops the generation."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        settings = settings or GenerationSettings()
        try:
            if self.model is None:
                raise LVLMError("The model was closed; load it again to generate.")
            inputs = self._inputs([request])
        except Exception as exc:  # noqa: BLE001
            raise self._failed(exc, "preparing the request") from exc
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop, failure = _StopFlag(), []

        def run() -> None:
            try:
                self._run(inputs, settings, streamer=streamer, stopping_criteria=StoppingCriteriaList([stop]))
            except Exception as exc:  # noqa: BLE001 - re-raised in the consumer's thread
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="lvlm-stream", daemon=True)
        worker.start()
        try:
            started, held = False, ""  # strip like generate(): no leading blanks, trailing ones held back
            for piece in streamer:
                if not started:
                    piece = piece.lstrip()
                    started = bool(piece)
                text = held + piece
                body = text.rstrip()
                held = text[len(body) :]
                if body:
                    yield body
        finally:
            stop.event.set()
            worker.join()
        if failure:
            raise self._failed(failure[0], "generating an answer")

    def health_check(self) -> HealthReport:
        """Identity, device, memory and a short generation on a small drawn image; never raises."""
        from PIL import Image, ImageDraw

        t0 = time.monotonic()
        prompt = "What colour is the square in this image? Answer in one word."
        report = HealthReport(ok=False, identity={}, test_prompt=prompt)
        try:
            report.identity = self.identity()
            report.device = describe_device(self.device)
            im = Image.new("RGB", (64, 64), (30, 60, 200))
            ImageDraw.Draw(im).rectangle([16, 16, 47, 47], fill=(220, 30, 30))
            gen = self.generate([[user_message(prompt, [im])]], GenerationSettings(max_new_tokens=16))[0]
            report.test_output = gen.text
            report.memory = self._memory()
            report.ok = gen.generated_tokens > 0
            if not report.ok:
                report.problem = "The test generation produced no tokens."
            if self.image_required:
                report.warnings.append(
                    f"This model ({self.model_type}) needs an image with every request: the text-only ones "
                    "(the judge, the strict retry, the class summary) are sent with a blank grey picture."
                )
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
            report.problem = str(exc) if isinstance(exc, LVLMError) else f"{type(exc).__name__}: {exc}"
        report.seconds = time.monotonic() - t0
        return report

    def _memory(self) -> str:
        if self.device.type == "cuda":
            used = torch.cuda.memory_allocated(self.device) / 2**30
            total = torch.cuda.get_device_properties(self.device).total_memory / 2**30
            return f"{used:.1f} GiB of {total:.1f} GiB allocated on the GPU"
        try:
            import psutil

            return f"{psutil.Process().memory_info().rss / 2**30:.2f} GiB resident (this process)"
        except ImportError:
            import resource

            return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB peak resident"

    def _free_cache(self) -> None:
        collect_garbage()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Free the weights now rather than when the object is collected (GPU memory is precious)."""
        self.model = None
        self.processor = None
        self._free_cache()


def _transformers_version() -> str:
    import transformers

    return transformers.__version__
