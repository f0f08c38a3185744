"""The LVLM check: every kind of request the critique, the chat and the class summary send, tried once.

``check_backend(backend)`` runs on any ``LVLMBackend`` (a local folder or a server): first the back-end's own
``health_check()`` (identity, device, memory, one short answer about a drawn picture), then one request of
each kind the program sends later, built by the same code that builds them there:

- critic: the critic's request (the image, its segment map and the numbered overlay, with the instructions),
  two in one batch, with token probabilities as the critic asks for them;
- judge: the judge's and the strict retry's text-only requests, two in one batch;
- summary: the class summary's text-only request;
- chat: a chat turn (system prompt, the three pictures, an earlier answer, a follow-up question), streamed.

A kind the critique or the summary sends that fails makes the check fail, in words that name the kind: a
critique would stop there after the critic's work, so the model is refused before any work. A chat turn that
fails is a warning instead (the critique never sends one; the chat pane and ``lvlmva ask`` would fail). Answers are short (a few tokens) and their content
is not judged, with one exception: an empty answer is told as a warning, and a model that answers every
request with nothing fails (its critiques would hold no text and every verdict would be undecided).

``lvlmva lvlm-check`` and the GUI's LVLM dialog both call this. Qt-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from lvlmva_desktop.core.method.critic import CritiqueRequest
from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState, ensure_state
from lvlmva_desktop.lvlm.backend import GenerationSettings, HealthReport, LVLMBackend, LVLMError
from lvlmva_desktop.lvlm.prompts import TemplateSet

# (kind, what it is in words): in the order they run
CALL_KINDS: tuple[tuple[str, str], ...] = (
    ("critic", "the critic's request (the image, its segment map and the numbered overlay, two in a batch)"),
    ("judge", "the judge's and the strict retry's text-only requests (two in a batch)"),
    ("summary", "the class summary's text-only request"),
    (
        "chat",
        "a chat turn (system prompt, the pictures, an earlier answer and a follow-up question, streamed)",
    ),
)
_WHAT = dict(CALL_KINDS)
OPTIONAL_KINDS = frozenset({"chat"})  # a failure is a warning: the critique never sends these
_MAX_NEW = 12  # tokens per answer: enough to see an answer, short enough for a big model on a CPU
_SHOWN = 160  # characters of each answer kept in the report


@dataclass
class CallCheck:
    """One kind of request tried: did it work, how long it took, what came back (or why it failed)."""

    kind: str
    ok: bool
    seconds: float = 0.0
    output: str = ""
    problem: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def probe_request(sample_id: int = 0, n_segments: int = 4, size: int = 48) -> CritiqueRequest:
    """A small drawn picture (a red square on blue) with ``n_segments`` segments (vertical bands) and an
    evidence map: a critique request of the shape the pipeline makes."""
    image = torch.zeros(3, size, size)
    image[2] = 0.8
    lo, hi = size // 4, 3 * size // 4
    image[:, lo:hi, lo:hi] = torch.tensor([0.85, 0.1, 0.1])[:, None, None]
    cols = torch.arange(size)
    segments = (cols * n_segments // size).expand(size, size).clone().long()
    attribution = torch.zeros(size, size)
    attribution[lo:hi, lo:hi] = 1.0
    evidence = [float(attribution[segments == s].sum()) for s in range(n_segments)]
    total = sum(evidence) or 1.0
    return CritiqueRequest(
        sample_id=sample_id,
        image=image,
        label=0,
        class_name="square",
        class_description="A red square in the middle of a blue picture.",
        attribution=attribution,
        segments=segments,
        segment_evidence=[e / total for e in evidence],
    )


def _words(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, LVLMError) else f"{type(exc).__name__}: {exc}"


def _calls(backend: LVLMBackend, templates: TemplateSet) -> list[tuple[str, Callable[[dict], str]]]:
    """Each kind's request, sent the way the critic, the chat and the summary send it."""
    from lvlmva_desktop.lvlm.chat import ChatSession, class_summary
    from lvlmva_desktop.lvlm.critic import CriticSettings, LVLMCritic

    critic = LVLMCritic(backend, templates, CriticSettings(use_cache=False, batch_size=2))
    requests = [probe_request(0, 4), probe_request(1, 2)]

    def settings(probs: bool) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=_MAX_NEW, batch_size=2, token_probs=probs)

    def run_critic(seen: dict) -> str:
        outs = backend.generate([critic.critic_request(r) for r in requests], settings(True))
        seen["critic_texts"] = [o.text for o in outs]
        return outs[0].text

    def run_judge(seen: dict) -> str:
        text = (seen.get("critic_texts") or [""])[0]
        reqs = [critic.judge_request(text, 4), critic.judge_request(text, 2, strict=True)]
        return backend.generate(reqs, settings(True))[0].text

    def run_summary(seen: dict) -> str:
        notes = [{"text": (seen.get("critic_texts") or [""])[0], "verdicts": "1 spurious, 2 relevant"}]
        return class_summary(
            backend, "square", requests[0].class_description, notes, templates, settings(False)
        )

    def run_chat(seen: dict) -> str:
        chat = ChatSession(
            backend,
            requests[0],
            templates,
            critic_text=(seen.get("critic_texts") or [""])[0],
            verdicts=[{"number": 1, "verdict": "spurious", "source": "critic"}],
            history=[("user", "What does segment 1 cover?"), ("assistant", "The blue background.")],
        )
        stream = chat.ask("Is segment 2 relevant?", settings(False))
        try:
            return "".join(stream).strip()
        finally:
            stream.close()

    return [("critic", run_critic), ("judge", run_judge), ("summary", run_summary), ("chat", run_chat)]


def check_backend(
    backend: LVLMBackend, state: TaskState | None = None, templates: TemplateSet | None = None
) -> HealthReport:
    """The back-end's health check, then one request of each kind (``CALL_KINDS``); never raises except
    ``Cancelled``. ``ok`` only when every kind but the optional ones worked and not every answer was empty."""
    state = ensure_state(state)
    t0 = time.monotonic()
    rep = backend.health_check()
    if not rep.ok:
        return rep
    templates = templates or TemplateSet.defaults()
    seen: dict = {}
    try:
        calls = _calls(backend, templates)
    except Exception as exc:  # noqa: BLE001 - the check reports, it does not raise
        rep.ok, rep.problem = False, f"The check's requests could not be built: {_words(exc)}"
        return rep
    for i, (kind, run) in enumerate(calls):
        state.check()
        state.progress(i, len(calls), f"Trying {_WHAT[kind]}")
        c0 = time.monotonic()
        try:
            call = CallCheck(kind, True, output=run(seen))
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is told in words
            call = CallCheck(kind, False, problem=_words(exc))
        call.seconds = time.monotonic() - c0
        call.output = call.output[:_SHOWN]
        rep.calls.append(call.to_dict())
    state.progress(len(calls), len(calls), "Checked every kind of request")
    rep.seconds = time.monotonic() - t0  # the health check's and every kind's
    for c in rep.calls:
        if c["kind"] in OPTIONAL_KINDS and not c["ok"]:
            rep.warnings.append(
                f"The model cannot take {_WHAT[c['kind']]}: {c['problem']} The critique does not need it, "
                "but the chat pane and `lvlmva ask` will fail with this model."
            )
    failed = [c for c in rep.calls if not c["ok"] and c["kind"] not in OPTIONAL_KINDS]
    if failed:
        c = failed[0]
        rep.ok = False
        rep.problem = (
            f"The model answered the test question but cannot take {_WHAT[c['kind']]}: {c['problem']} "
            "A critique would fail at that step after the critic's work, so this model is refused."
        )
        if len(failed) > 1:
            rep.problem += " Also failed: " + "; ".join(
                f"{_WHAT[x['kind']]}: {x['problem']}" for x in failed[1:]
            )
        return rep
    answered = [c for c in rep.calls if c["ok"]]
    empty = ([] if rep.test_output.strip() else ["the test question"]) + [
        _WHAT[c["kind"]] for c in answered if not c["output"].strip()
    ]
    if len(empty) == len(answered) + 1:
        rep.ok = False
        rep.problem = (
            "The model answered every test request with nothing (an empty answer): its critiques would hold "
            "no text and every verdict would be undecided. Is it an instruction-following (chat) model?"
        )
    elif empty:
        rep.warnings.append(
            "The model's answer was empty for " + "; ".join(empty) + ". An empty critic or judge answer "
            "leaves that image's verdicts undecided."
        )
    return rep
