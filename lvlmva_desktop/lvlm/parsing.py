"""Verdicts out of whatever an LVLM wrote: structured JSON when it followed the format, prose otherwise.

Never raises on model output. Each segment gets "spurious", "relevant", "undecided" or None (not found);
the critic turns None into "undecided" after its one stricter retry, so a garbled answer costs a verdict,
never a run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

SPURIOUS, RELEVANT, UNDECIDED = "spurious", "relevant", "undecided"

_SYNONYMS = {
    SPURIOUS: SPURIOUS,
    "irrelevant": SPURIOUS,
    "not relevant": SPURIOUS,
    "shortcut": SPURIOUS,
    "artefact": SPURIOUS,
    "artifact": SPURIOUS,
    "forbidden": SPURIOUS,
    RELEVANT: RELEVANT,
    "not spurious": RELEVANT,
    "core": RELEVANT,
    "valid": RELEVANT,
    UNDECIDED: UNDECIDED,
    "unsure": UNDECIDED,
    "unknown": UNDECIDED,
    "uncertain": UNDECIDED,
    "unclear": UNDECIDED,
}
_WORDS = "|".join(sorted((re.escape(w) for w in _SYNONYMS), key=len, reverse=True))
# "Segment 2: spurious", "segment 2 is **not relevant**", "Segment #3 - relevant", "S2 = spurious"
_PROSE = re.compile(
    rf"\b(?:segment|seg\.?)\s*#?\s*(\d+)\b[\s*_:\-–—=()\[\]]*(?:is\s+|was\s+|verdict\s*[:=]?\s*)?"
    rf"[\s*_\"']*({_WORDS})\b",
    re.IGNORECASE,
)


@dataclass
class ParseResult:
    verdicts: list[str | None]  # per segment (0-based), None = not found in the text
    method: str  # "json", "prose" or "none"
    reasons: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.verdicts)

    @property
    def n_found(self) -> int:
        return sum(v is not None for v in self.verdicts)


def normalise_verdict(value: object) -> str | None:
    """Map a model's word (or boolean "is spurious") to one of the three verdicts, else None."""
    if isinstance(value, bool):
        return SPURIOUS if value else RELEVANT
    if not isinstance(value, str):
        return None
    v = re.sub(r"[^a-z ]", " ", value.lower())
    v = " ".join(v.split())
    if v in _SYNONYMS:
        return _SYNONYMS[v]
    found = {_SYNONYMS[w] for w in re.findall(rf"\b({_WORDS})\b", v)}
    return found.pop() if len(found) == 1 else None  # "relevant or spurious" decides nothing


def _json_objects(text: str) -> list[object]:
    """Every JSON value that starts at a '{' in the text (models wrap JSON in prose and code fences)."""
    dec = json.JSONDecoder()
    out = []
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = dec.raw_decode(text, m.start())
        except (json.JSONDecodeError, RecursionError):
            continue
        out.append(obj)
    return out


def _from_json(obj: object, n: int) -> tuple[list[str | None], list[str]] | None:
    verdicts: list[str | None] = [None] * n
    reasons = [""] * n
    items: list = []
    if isinstance(obj, dict) and isinstance(obj.get("segments"), list):
        items = obj["segments"]
    elif isinstance(obj, dict) and isinstance(obj.get("verdicts"), list):
        items = obj["verdicts"]
    elif isinstance(obj, dict):  # {"1": "spurious", "2": "relevant"} or {"segment 1": ...}
        for k, v in obj.items():
            m = re.search(r"\d+", str(k))
            if m:
                items.append({"segment": int(m.group()), "verdict": v})
    numbered = []
    for it in items:
        if not isinstance(it, dict):
            continue
        num = it.get("segment", it.get("id", it.get("index")))
        try:
            numbered.append((int(str(num).strip().lstrip("#")), it))
        except (TypeError, ValueError):
            continue
    # segments are numbered from 1 in every prompt; an answer that uses 0 counted from 0
    base = 0 if any(k == 0 for k, _ in numbered) else 1
    found = False
    for k, it in numbered:
        idx = k - base
        verdict = normalise_verdict(it.get("verdict", it.get("spurious", it.get("label"))))
        if 0 <= idx < n and verdict is not None:
            verdicts[idx] = verdict
            reasons[idx] = str(it.get("reason", it.get("rationale", "")))[:500]
            found = True
    return (verdicts, reasons) if found else None


def parse_verdicts(text: str, n_segments: int) -> ParseResult:
    """Verdicts for segments 1..n from ``text``.

    The last usable JSON object is the answer (models draft before they conclude); segments it leaves
    open are filled from earlier JSON objects, then from prose lines, where later mentions win.
    """
    text = text or ""
    objects = [got for obj in _json_objects(text) if (got := _from_json(obj, n_segments)) is not None]
    prose: list[str | None] = [None] * n_segments
    for m in _PROSE.finditer(text):  # later mentions (the final "Step 6" lines) override earlier ones
        idx = int(m.group(1)) - 1
        if 0 <= idx < n_segments:
            prose[idx] = _SYNONYMS[m.group(2).lower()]
    if objects:
        verdicts, reasons = list(objects[-1][0]), list(objects[-1][1])
        for earlier, why in reversed(objects[:-1]):
            for i, v in enumerate(earlier):
                if verdicts[i] is None and v is not None:
                    verdicts[i], reasons[i] = v, why[i]
        verdicts = [v if v is not None else p for v, p in zip(verdicts, prose)]
        return ParseResult(verdicts, "json", reasons)
    method = "prose" if any(v is not None for v in prose) else "none"
    return ParseResult(prose, method, [""] * n_segments)


def judge_answer(text: str) -> str:
    """The judge's answer only: a few-shot completion may go on to invent the next "Notes:" example."""
    cut = re.search(r"\n\s*Notes:", text or "")
    return text[: cut.start()] if cut else (text or "")
