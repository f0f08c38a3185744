"""What every LVLM back-end offers: chat requests with images in, generated text out.

Two back-ends implement ``LVLMBackend``: ``local.LocalBackend`` (a transformers model folder on this
machine) and ``endpoint.EndpointBackend`` (a site's OpenAI-compatible chat-completions server). The critic,
the judge and the chat pane only see this interface, so they run unchanged on either.

A request is a list of messages in the OpenAI / transformers chat shape::

    [{"role": "system", "content": [{"type": "text", "text": "..."}]},
     {"role": "user", "content": [{"type": "image", "image": <PIL.Image>}, {"type": "text", "text": "..."}]}]

Images are PIL images; each back-end turns them into what its model or server needs (processor inputs,
data URLs). Generation is greedy unless a temperature above 0 is asked for, so runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from lvlmva_desktop.core.runtime.errors import PlainError
from lvlmva_desktop.core.runtime.jobs import TaskState

Message = dict[str, Any]
ChatRequest = list[Message]


class LVLMError(PlainError, RuntimeError):
    """A problem with the LVLM (folder, server, generation) in words the expert can act on."""

    kind = "lvlm"


@dataclass
class GenerationSettings:
    """How to generate. max_new_tokens bounds each answer; temperature 0 means greedy (reproducible).

    batch_size: how many requests one generate() call may hold (local back-end); the endpoint back-end
    sends up to ``max_concurrency`` requests at once instead.
    """

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0
    ignore_eos: bool = False  # benchmarks only: always generate max_new_tokens (local back-end)
    # also return each generated token's probability (Generation.token_probs), where the back-end can: the
    # critic asks for it to know how sure the judge was of each verdict (core/views/review.py)
    token_probs: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    """One answer, with the token counts the throughput figures and the audit record need."""

    text: str
    prompt_tokens: int = 0
    generated_tokens: int = 0
    finish_reason: str = ""  # "stop", "length", or what the server said
    extra: dict = field(default_factory=dict)
    # with GenerationSettings.token_probs, where the back-end knows them: one (end, probability) per
    # generated token, in order: the token ends at character ``end`` of ``text`` (the first token that ends
    # after a character emitted it); None where the back-end or server gave none
    token_probs: list[tuple[int, float]] | None = None


def prob_at(generation: Generation, position: int) -> float | None:
    """The probability of the token that emitted character ``position`` of ``generation.text`` (None where
    the generation carries no token probabilities or the position lies beyond them)."""
    if not generation.token_probs or position < 0:
        return None
    for end, p in generation.token_probs:
        if end > position:
            return p
    return None


def token_ends(pieces: Sequence[str], text: str) -> list[int] | None:
    """The end offsets in ``text`` of consecutive token ``pieces`` whose concatenation is ``text`` (what a
    server's log-probabilities list), or None when they do not spell it."""
    ends, at = [], 0
    for piece in pieces:
        at += len(piece)
        ends.append(at)
    return ends if "".join(pieces) == text else None


@dataclass
class HealthReport:
    """The result of a health check: who the model is, where it runs, and a test generation.

    ``check.check_backend`` adds ``calls``: one ``CallCheck.to_dict()`` per kind of request the critique,
    the chat and the summary send; ``warnings``: what works but deserves a word (an empty answer, say)."""

    ok: bool
    identity: dict
    device: str = ""
    memory: str = ""
    test_prompt: str = ""
    test_output: str = ""
    seconds: float = 0.0
    problem: str = ""  # set when ok is False: what went wrong, in words
    calls: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class LVLMBackend(Protocol):
    """A loaded LVLM. ``identity`` is recorded with every critique (and keys the critique cache)."""

    def identity(self) -> dict: ...

    def generate(
        self,
        requests: Sequence[ChatRequest],
        settings: GenerationSettings | None = None,
        state: TaskState | None = None,
    ) -> list[Generation]:
        """One answer per request, in order; batched as the back-end allows; cancellable between batches."""
        ...

    def stream(self, request: ChatRequest, settings: GenerationSettings | None = None) -> Iterator[str]:
        """The answer to one request, piece by piece as it is generated (for the chat pane)."""
        ...

    def health_check(self) -> HealthReport: ...

    def close(self) -> None: ...


def text_message(role: str, text: str) -> Message:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def user_message(text: str, images: Sequence[Any] = ()) -> Message:
    """A user turn: the images first (in order), then the text."""
    content: list[dict] = [{"type": "image", "image": im} for im in images]
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def request_images(request: ChatRequest) -> list[Any]:
    """Every image in a request, in order of appearance."""
    return [
        part["image"]
        for msg in request
        for part in (msg["content"] if isinstance(msg["content"], list) else [])
        if part.get("type") == "image"
    ]
