"""The expert's conversation with the LVLM about one image, and class-level summaries.

The first user turn carries the image, the segment map and the numbered overlay; the system prompt
(chat_system.j2) carries the class, the expert's description, the critic's text and the current verdicts.
Later turns are text only. Answers stream piece by piece; the caller stores the transcript.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..core.critic import CritiqueRequest
from .backend import ChatRequest, GenerationSettings, LVLMBackend, text_message, user_message
from .prompts import TemplateSet
from .render import render_views, segment_context


class ChatSession:
    """A conversation bound to one image; ``history`` holds (role, text) pairs, oldest first."""

    def __init__(
        self,
        backend: LVLMBackend,
        request: CritiqueRequest,
        templates: TemplateSet | None = None,
        critic_text: str = "",
        verdicts: Sequence[dict] = (),
        history: Sequence[tuple[str, str]] = (),
        image_min_side: int = 336,
    ) -> None:
        self.backend = backend
        self.request = request
        self.templates = templates or TemplateSet.defaults()
        self.critic_text = critic_text
        self.verdicts = list(verdicts)  # [{"number": 1, "verdict": "spurious", "source": "expert"}, ...]
        self.history: list[tuple[str, str]] = list(history)
        self.images = list(render_views(request.image, request.segments, request.attribution, image_min_side))

    def system_prompt(self) -> str:
        r = self.request
        segs = segment_context(r.segments, r.attribution, r.segment_evidence)
        return self.templates.render(
            "chat_system.j2",
            class_name=r.class_name,
            class_description=r.class_description,
            segments=segs,
            verdicts=self.verdicts,
            critic_text=self.critic_text,
        )

    def messages(self, question: str) -> ChatRequest:
        msgs: ChatRequest = [text_message("system", self.system_prompt())]
        turns = [*self.history, ("user", question)]
        for i, (role, text) in enumerate(turns):
            if i == 0 and role == "user":
                msgs.append(user_message(text, self.images))
            else:
                msgs.append(text_message(role, text))
        return msgs

    def ask(self, question: str, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Stream the answer; the exchange joins the history once the answer is complete."""
        question = question.strip()
        if not question:
            raise ValueError("The question is empty.")
        pieces = []
        for piece in self.backend.stream(
            self.messages(question), settings or GenerationSettings(max_new_tokens=400)
        ):
            pieces.append(piece)
            yield piece
        self.history += [("user", question), ("assistant", "".join(pieces).strip())]


def class_summary(
    backend: LVLMBackend,
    class_name: str,
    class_description: str,
    notes: Sequence[dict],
    templates: TemplateSet | None = None,
    settings: GenerationSettings | None = None,
    max_notes: int = 12,
) -> str:
    """What the model relies on for one class, summarised from critic notes ({text, verdicts} each)."""
    if not notes:
        raise ValueError(f"There are no critiques of class '{class_name}' to summarise yet.")
    templates = templates or TemplateSet.defaults()
    prompt = templates.render(
        "class_summary.j2",
        class_name=class_name,
        class_description=class_description,
        notes=[{"text": n["text"][:1500], "verdicts": n.get("verdicts", "")} for n in notes[:max_notes]],
    )
    out = backend.generate(
        [[text_message("user", prompt)]], settings or GenerationSettings(max_new_tokens=400)
    )
    return out[0].text
