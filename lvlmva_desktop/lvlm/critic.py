"""The LVLM critic and judge (METHOD.md steps 5-6) behind the core's Critic interface.

Two-call mode (the paper's): the critic LVLM sees the image, the segment map and the numbered overlay
and reasons in six steps; a judge call turns that text into JSON verdicts using the expert's few-shot
examples. One-call mode asks the critic to end its reasoning with the JSON itself, halving the calls.
Whatever the model writes, parsing never fails a run: missing verdicts get one stricter retry, and what
is still missing becomes "undecided", which is not spurious, is shown to the expert and is counted.

Each verdict carries the judge's confidence where the back-end gives token probabilities (a local model
always; a server when it returns log-probabilities): the probability, under the softmax over the whole
vocabulary at that step, of the first token of the verdict word, at the place in the answer the verdict
was read from (``verdict_positions``; the critic's own text in one-call mode or where its prose filled a
gap the judge left). For a judge that follows the answer format this is close to the probability
renormalised over the verdict words, since the rest of the vocabulary gets almost no mass there; it is
the model's own number, not a calibrated one. The review queue asks the expert about the least sure
verdicts first (core/views/review.py).

Rerunning an unchanged critique costs nothing: results are cached under a key made of the image, the
attribution and segment maps, the class description, the template hashes, the model identity and the
generation settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch

from lvlmva_desktop.core.method.critic import UNDECIDED, Critique, CritiqueRequest, SegmentVerdict
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.lvlm.backend import (
    Generation,
    GenerationSettings,
    LVLMBackend,
    prob_at,
    text_message,
    user_message,
)
from lvlmva_desktop.lvlm.parsing import (
    _PROSE,
    _SYNONYMS,
    ParseResult,
    _from_json,
    judge_answer,
    normalise_verdict,
    parse_verdicts,
)
from lvlmva_desktop.lvlm.prompts import TemplateSet
from lvlmva_desktop.lvlm.render import render_views, segment_context

log = logging.getLogger(__name__)


@dataclass
class CriticSettings:
    """one_call: critic and judge in one generation. strict_retry: ask once more, strictly, when verdicts
    are missing. image_min_side: the pictures are enlarged to at least this many pixels (nearest
    neighbour). send_segment_map: include the plain segment map besides the numbered overlay."""

    one_call: bool = False
    critic_max_new_tokens: int = 768
    judge_max_new_tokens: int = 200
    batch_size: int = 8
    temperature: float = 0.0
    strict_retry: bool = True
    image_min_side: int = 336
    send_segment_map: bool = True
    use_cache: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def tensor_hash(t: torch.Tensor | None) -> str:
    if t is None:
        return "none"
    a = t.detach().cpu().contiguous()
    if a.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16: hash the same bits as int16
        a = a.view(torch.int16)
    return hashlib.sha256(
        str(tuple(a.shape)).encode() + str(a.dtype).encode() + a.numpy().tobytes()
    ).hexdigest()


def _model_label(identity: dict) -> str:
    if identity.get("kind") == "endpoint":
        return f"{identity.get('model')} at {identity.get('base_url')}"
    folder = str(identity.get("folder", "?")).rstrip("/").split("/")[-1]
    return f"{identity.get('model_type', 'model')} from {folder}"


class LVLMCritic:
    """Critic + judge with a local or endpoint LVLM; ``judge_backend`` may be another model."""

    def __init__(
        self,
        backend: LVLMBackend,
        templates: TemplateSet | None = None,
        settings: CriticSettings | None = None,
        cache: object | None = None,
        judge_backend: LVLMBackend | None = None,
    ) -> None:
        self.backend = backend
        self.judge_backend = judge_backend or backend
        self.templates = templates or TemplateSet.defaults()
        self.settings = settings or CriticSettings()
        self.cache = cache if self.settings.use_cache else None
        self.templates.judge_examples()  # fail now, in words, if the expert's examples are broken
        self._identity = backend.identity()
        self._judge_identity = self.judge_backend.identity() if judge_backend is not None else None
        mode = "one call" if self.settings.one_call else "critic + judge"
        self.name = f"LVLM critic ({_model_label(self._identity)}, {mode})"

    def identity(self) -> dict:
        kind = "one_call" if self.settings.one_call else None
        hashes = (
            self.templates.hashes(kind)
            if kind
            else {
                **self.templates.hashes("critic"),
                **self.templates.hashes("judge"),
            }
        )
        return {
            "kind": "lvlm",
            "model": self._identity,
            "judge_model": self._judge_identity,
            "settings": self.settings.to_dict(),
            "templates": hashes,
            "template_versions": {n: self.templates.versions.get(n, 0) for n in hashes},
        }

    # -- prompts ---------------------------------------------------------------------------------
    def critic_request(self, r: CritiqueRequest) -> list[dict]:
        image, seg_map, overlay = render_views(
            r.image, r.segments, r.evidence(), self.settings.image_min_side
        )
        template = "one_call.j2" if self.settings.one_call else "critic.j2"
        text = self.templates.render(
            template,
            class_name=r.class_name,
            class_description=r.class_description,
            segments=segment_context(r.segments, r.evidence(), r.segment_evidence),
        )
        images = [image, seg_map, overlay] if self.settings.send_segment_map else [image, overlay]
        return [user_message(text, images)]

    def judge_request(self, critic_text: str, n_segments: int, strict: bool = False) -> list[dict]:
        name = "judge_strict.j2" if strict else "judge.j2"
        text = self.templates.render(
            name,
            critic_text=critic_text,
            n_segments=n_segments,
            examples=self.templates.judge_examples(),
        )
        return [text_message("user", text)]

    def _cache_identity(self) -> dict:
        """The critic's part of every cache key: model, templates (by hash) and what shapes the answer."""
        ident = self.identity()
        ident.pop("template_versions", None)  # the hashes say whether the wording changed
        ident["settings"] = {
            k: v for k, v in ident["settings"].items() if k not in ("batch_size", "use_cache")
        }
        return ident

    def cache_key(self, r: CritiqueRequest, ident: dict | None = None) -> str:
        ident = ident if ident is not None else self._cache_identity()
        parts = {
            "image": tensor_hash(r.image),
            "attribution": tensor_hash(r.attribution),
            "segments": tensor_hash(r.segments.long()),
            "evidence": [round(float(e), 6) for e in r.segment_evidence],  # shown in the prompt
            "label": r.class_name,
            "description": hashlib.sha256(r.class_description.encode("utf-8")).hexdigest(),
            "critic": ident,
        }
        if r.evidence_kind != "positive":  # label positions follow the evidence (older keys stay valid)
            parts["evidence_kind"] = r.evidence_kind
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    # -- the job ---------------------------------------------------------------------------------
    def _gen(self, backend: LVLMBackend, reqs: list, max_new: int, state: TaskState) -> list:
        s = self.settings
        gs = GenerationSettings(
            max_new_tokens=max_new, temperature=s.temperature, batch_size=s.batch_size, token_probs=True
        )
        return backend.generate(reqs, gs, state)

    def critique(
        self, requests: Sequence[CritiqueRequest], state: TaskState | None = None
    ) -> Iterator[Critique]:
        state = ensure_state(state)
        n = len(requests)
        bs = max(1, self.settings.batch_size)
        ident = self._cache_identity()  # hashed once per run, not once per image
        done = 0
        for start in range(0, n, bs):
            state.check()
            batch = list(requests[start : start + bs])
            keys = [self.cache_key(r, ident) for r in batch]
            results: dict[int, Critique] = {}
            todo = []
            for i, (r, key) in enumerate(zip(batch, keys)):
                hit = self.cache.cache_get(key) if self.cache is not None else None
                if hit is not None:
                    results[i] = _critique_from_cache(r.sample_id, hit)
                else:
                    todo.append(i)
            if todo:
                sub = state.child(done / n, (done + len(batch)) / n)
                for i, c in zip(todo, self._run([batch[i] for i in todo], sub)):
                    c.raw["cache_key"] = keys[i]
                    unread = len(c.raw["undecided_by_parser"]) == len(c.verdicts)
                    if self.cache is not None and c.text.strip() and not unread:  # failures are asked again
                        self.cache.cache_put(keys[i], c.to_dict())
                    results[i] = c
            for i in range(len(batch)):
                yield results[i]
            done += len(batch)
            state.progress(done, n, f"critique {done}/{n}")

    def _run(self, batch: list[CritiqueRequest], state: TaskState) -> list[Critique]:
        s = self.settings
        # each pass has its own stretch of the batch's progress, so the bar never goes back between the
        # critic, the judge and the strict retry (and each pass's time left is measured on its own pace)
        ends = (0.9, 0.9) if s.one_call else (0.6, 0.9)
        outs = self._gen(
            self.backend,
            [self.critic_request(r) for r in batch],
            s.critic_max_new_tokens,
            state.child(0.0, ends[0]),
        )
        calls = [1] * len(batch)
        tokens = [[o.prompt_tokens, o.generated_tokens] for o in outs]
        critic_texts = [o.text for o in outs]
        judge_texts = [""] * len(batch)
        ns = [len(r.segment_evidence) for r in batch]
        # where each image's verdicts may have been read from, in the order the parsing below prefers them
        sources: list[list[tuple[str, Generation]]] = [[] for _ in batch]
        if s.one_call:
            parsed = [parse_verdicts(t, k) for t, k in zip(critic_texts, ns)]
            for i, o in enumerate(outs):
                sources[i].append((critic_texts[i], o))
        else:
            state.check()
            jreqs = [self.judge_request(t, k) for t, k in zip(critic_texts, ns)]
            jouts = self._gen(self.judge_backend, jreqs, s.judge_max_new_tokens, state.child(*ends))
            judge_texts = [o.text for o in jouts]
            for i, o in enumerate(jouts):
                sources[i].append((judge_answer(o.text), o))
            parsed = [parse_verdicts(judge_answer(t), k) for t, k in zip(judge_texts, ns)]
            for i, o in enumerate(jouts):
                calls[i] += 1
                tokens[i][0] += o.prompt_tokens
                tokens[i][1] += o.generated_tokens
        retry_texts: dict[int, str] = {}
        if s.strict_retry:
            # prose in the critic text may already settle what the judge left open
            for i, p in enumerate(parsed):
                if not p.complete and not s.one_call:
                    parsed[i] = _merge(p, parse_verdicts(critic_texts[i], ns[i]))
                    sources[i].append((critic_texts[i], outs[i]))
            missing = [i for i, p in enumerate(parsed) if not p.complete]
            if missing:
                state.check()
                rreqs = [self.judge_request(critic_texts[i], ns[i], strict=True) for i in missing]
                routs = self._gen(
                    self.judge_backend, rreqs, s.judge_max_new_tokens, state.child(ends[1], 1.0)
                )
                for i, o in zip(missing, routs):
                    retry_texts[i] = o.text
                    parsed[i] = _merge(parsed[i], parse_verdicts(judge_answer(o.text), ns[i]))
                    sources[i].append((judge_answer(o.text), o))
                    calls[i] += 1
                    tokens[i][0] += o.prompt_tokens
                    tokens[i][1] += o.generated_tokens
        out = []
        hashes = self.identity()["templates"]
        for i, r in enumerate(batch):
            p = parsed[i]
            conf = verdict_confidences(p.verdicts, sources[i])
            verdicts = [
                SegmentVerdict(
                    seg, v if v is not None else UNDECIDED, p.reasons[seg] if p.reasons else "", conf[seg]
                )
                for seg, v in enumerate(p.verdicts)
            ]
            raw = {
                "critic_output": critic_texts[i],
                "judge_output": judge_texts[i],
                "retry_output": retry_texts.get(i),
                "parse": p.method,
                "retried": i in retry_texts,
                "undecided_by_parser": [k + 1 for k, v in enumerate(p.verdicts) if v is None],
                "templates": hashes,
                "model": self._identity,
                "calls": calls[i],
                "prompt_tokens": tokens[i][0],
                "generated_tokens": tokens[i][1],
                "cached": False,
            }
            out.append(Critique(r.sample_id, self.name, critic_texts[i], verdicts, raw))
        return out


def _merge(a: ParseResult, b: ParseResult) -> ParseResult:
    """Keep a's verdicts; fill its gaps from b."""
    verdicts = [x if x is not None else y for x, y in zip(a.verdicts, b.verdicts)]
    reasons = [x or y for x, y in zip(a.reasons or [""] * len(verdicts), b.reasons or [""] * len(verdicts))]
    method = a.method if a.n_found else b.method
    return ParseResult(verdicts, method, reasons)


def _critique_from_cache(sample_id: int, d: dict) -> Critique:
    raw = dict(d.get("raw", {}))
    raw["cached"] = True
    raw["calls"] = raw["prompt_tokens"] = raw["generated_tokens"] = 0  # a cache hit costs nothing
    return Critique(
        sample_id,
        d["critic"],
        d["text"],
        [
            SegmentVerdict(v["segment"], v["verdict"], v.get("rationale", ""), v.get("confidence"))
            for v in d["verdicts"]
        ],
        raw,
    )


def verdict_confidences(
    verdicts: Sequence[str | None], sources: Sequence[tuple[str, Generation]]
) -> list[float | None]:
    """Per segment, the probability of the token that began its verdict word, in the first of ``sources``
    (text parsed, its generation; in the order the parsing preferred them) that gives the segment a verdict;
    None where that source's verdict is not the one kept, the generation has no token probabilities, or
    the segment has no verdict."""
    out: list[float | None] = [None] * len(verdicts)
    found = [verdict_positions(text, len(verdicts)) for text, _ in sources]
    for seg, v in enumerate(verdicts):
        if v is None:
            continue
        for (said, pos), (_, gen) in zip((f[seg] for f in found), sources):
            if said is None:
                continue
            if said == v and pos is not None:
                p = prob_at(gen, pos)
                out[seg] = p if p is not None and 0.0 < p <= 1.0 else None
            break
    return out


def verdict_positions(text: str, n_segments: int) -> list[tuple[str | None, int | None]]:
    """Per segment (0-based), the verdict ``parsing.parse_verdicts`` reads from ``text`` and the character
    where its value begins (None, None where there is none), found the way the parser chooses: prose
    mentions (later ones win), overridden by JSON objects in the order they appear (a later one wins)."""
    out: list[tuple[str | None, int | None]] = [(None, None)] * n_segments
    for m in _PROSE.finditer(text or ""):
        idx = int(m.group(1)) - 1
        if 0 <= idx < n_segments:
            out[idx] = (_SYNONYMS[m.group(2).lower()], m.start(2))
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", text or ""):
        try:
            obj, end = dec.raw_decode(text, m.start())
        except (json.JSONDecodeError, RecursionError):
            continue
        got = _from_json(obj, n_segments)
        if got is None:
            continue
        spans = _json_value_starts(text, m.start(), end, obj, n_segments)
        for idx, v in enumerate(got[0]):
            if v is not None:
                out[idx] = (v, spans.get(idx))
    return out


_VERDICT_KEYS = ("verdict", "spurious", "label")


def _json_value_starts(text: str, start: int, end: int, obj: dict, n: int) -> dict[int, int]:
    """Where each segment's verdict value begins inside the JSON object ``obj`` at text[start:end]
    (following ``parsing._from_json``'s reading: a list under "segments" or "verdicts", else numbered keys)."""
    items = obj["segments"] if isinstance(obj.get("segments"), list) else obj.get("verdicts")
    found: list[tuple[int, int, str | None]] = []  # (number, value start, verdict)
    if isinstance(items, list):
        spans = _item_spans(text, start, end, items)
        for it, span in zip(items, spans):
            if not isinstance(it, dict) or span is None:
                continue
            try:
                num = int(str(it.get("segment", it.get("id", it.get("index")))).strip().lstrip("#"))
            except (TypeError, ValueError):
                continue
            key = next((k for k in _VERDICT_KEYS if k in it), None)
            at = _value_start(text, span[0], span[1], key) if key else None
            if at is not None:
                found.append((num, at, normalise_verdict(it[key])))
    else:
        for k, v in obj.items():
            m = re.search(r"\d+", str(k))
            at = _value_start(text, start, end, str(k)) if m else None
            if m and at is not None:
                found.append((int(m.group()), at, normalise_verdict(v)))
    base = 0 if any(num == 0 for num, _, _ in found) else 1
    out: dict[int, int] = {}
    for num, at, verdict in found:
        if 0 <= num - base < n and verdict is not None:
            out[num - base] = at
    return out


def _item_spans(text: str, start: int, end: int, items: list) -> list[tuple[int, int] | None]:
    """The text span of each dict of ``items`` (a JSON list inside text[start:end]), matched in order."""
    dec = json.JSONDecoder()
    spans: list[tuple[int, int] | None] = [None] * len(items)
    want = [k for k, it in enumerate(items) if isinstance(it, dict)]
    pos = start + 1
    while want:
        at = text.find("{", pos, end)
        if at < 0:
            break
        try:
            obj, stop = dec.raw_decode(text, at)
        except (json.JSONDecodeError, RecursionError):
            pos = at + 1
            continue
        if obj == items[want[0]]:
            spans[want.pop(0)] = (at, stop)
            pos = stop
        else:
            pos = at + 1
    return spans


def _value_start(text: str, start: int, end: int, key: str) -> int | None:
    """Where the value of ``"key":`` begins in text[start:end] (after an opening quote)."""
    m = re.compile(r'"' + re.escape(key) + r'"\s*:\s*"?').search(text, start, end)
    return m.end() if m else None
