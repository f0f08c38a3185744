"""The expert's conversation with the LVLM about one image, and class-level summaries.

The first user turn carries the image, the segment map and the numbered overlay; the system prompt
(chat_system.j2) carries the class, the expert's description, the critic's text and the current verdicts.
Later turns are text only. Answers stream piece by piece. ``chat_for_sample``, ``ask_and_store`` and
``summarise_class`` tie this to a project (critique, verdicts, stored transcript): the command line's
``ask`` and ``summary`` and the GUI's chat pane all go through them.

``chat_for_image`` opens a conversation about any image of the project: an image of the alignment set gets
its critique and verdicts (``chat_for_sample``); any other image (a misclassified test image, say) gets the
model's evidence and segments computed on demand by ``core.views.viewer.explain_samples`` (as the viewer computes
them) and the model's prediction, and its transcript is stored with no explanation (``explanation_id`` NULL).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence

from lvlmva_desktop.core.method.critic import CritiqueRequest
from lvlmva_desktop.core.runtime.jobs import TaskState
from lvlmva_desktop.core.store import audit
from lvlmva_desktop.lvlm.backend import (
    ChatRequest,
    GenerationSettings,
    LVLMBackend,
    text_message,
    user_message,
)
from lvlmva_desktop.lvlm.prompts import TemplateSet
from lvlmva_desktop.lvlm.render import render_views, segment_context


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
        note: str = "",
        explanation_id: int | None = None,
    ) -> None:
        self.backend = backend
        self.request = request
        self.templates = templates or TemplateSet.defaults()
        self.critic_text = critic_text
        self.verdicts = list(verdicts)  # [{"number": 1, "verdict": "spurious", "source": "expert"}, ...]
        self.history: list[tuple[str, str]] = list(history)
        self.note = note  # what the system prompt adds after the template (an image outside the set)
        # where the transcript is stored: (explanation, image); None for an image no explanation covers
        self.explanation_id, self.sample_id = explanation_id, request.sample_id
        self.images = list(render_views(request.image, request.segments, request.evidence(), image_min_side))

    def system_prompt(self) -> str:
        r = self.request
        segs = segment_context(r.segments, r.evidence(), r.segment_evidence)
        text = self.templates.render(
            "chat_system.j2",
            class_name=r.class_name,
            class_description=r.class_description,
            segments=segs,
            verdicts=self.verdicts,
            critic_text=self.critic_text,
        )
        return f"{text}\n{self.note}" if self.note else text

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
    state: TaskState | None = None,
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
        [[text_message("user", prompt)]], settings or GenerationSettings(max_new_tokens=400), state
    )
    return out[0].text


# -- the project side: one code path for the command line and the chat pane -----------------------------
SUMMARY_ROLE = "summary"


def in_alignment_set(project, expl_id: int, sample_id: int) -> bool:
    """Whether an explanation covers the image (it explains every member of its alignment set)."""
    return project.explains_sample(expl_id, sample_id)


def require_in_alignment_set(project, expl_id: int, sample_id: int) -> None:
    if not in_alignment_set(project, expl_id, sample_id):
        raise ValueError(f"Image {sample_id} is not in the alignment set of explanation {expl_id}.")


def sample_verdicts(project, expl_id: int, sample_id: int) -> list[dict]:
    """The image's verdict per segment and who decided it: [{number, verdict, source, author}, ...]."""
    eff = project.effective_verdicts(expl_id).get(sample_id, {})
    return [
        {"number": s + 1, "verdict": d["verdict"], "source": d["source"], "author": d.get("author") or ""}
        for s, d in sorted(eff.items())
    ]


def critic_text(project, expl_id: int, sample_id: int) -> str:
    """The latest critic's notes about the image ('' when it was not critiqued yet)."""
    texts = [c["text"] for c in project.critiques(expl_id) if c["sample_id"] == sample_id]
    return (texts[-1] or "") if texts else ""


def chat_for_sample(
    project, expl_id: int, sample_id: int, backend: LVLMBackend, templates: TemplateSet | None = None
) -> ChatSession:
    """A conversation about one image, carrying its critique, verdicts and the stored transcript."""
    from lvlmva_desktop.core.method.pipeline import critique_requests

    require_in_alignment_set(project, expl_id, sample_id)
    request = next(r for r in critique_requests(project, expl_id) if r.sample_id == sample_id)
    history = [(m["role"], m["text"]) for m in project.chat_messages(expl_id, sample_id)]
    verdicts = [
        {k: v[k] for k in ("number", "verdict", "source")}
        for v in sample_verdicts(project, expl_id, sample_id)
    ]
    return ChatSession(
        backend,
        request,
        templates or TemplateSet.for_project(project),
        critic_text(project, expl_id, sample_id),
        verdicts,
        history,
        explanation_id=expl_id,
    )


def chat_explanation(project, expl_id: int | None, sample_id: int) -> int | None:
    """The explanation a conversation about an image belongs to: ``expl_id`` where it covers the image (its
    alignment set), else None (the image's evidence is computed for the conversation, not stored)."""
    return expl_id if expl_id is not None and in_alignment_set(project, expl_id, sample_id) else None


def image_request(
    project,
    sample_id: int,
    device,
    expl_id: int | None = None,
    model_id: int | None = None,
    settings=None,
    state: TaskState | None = None,
) -> tuple[CritiqueRequest, str]:
    """The image, the model's evidence and segments, computed now (``core.views.viewer.explain_samples``, as the
    viewer computes an image's map), and a note for the system prompt with the model's prediction.

    With an explanation, its model and its recorded settings are used (the evidence agrees with the stored
    maps); without one, ``model_id`` with ``settings`` (a ``PipelineSettings``; None: the defaults).
    """
    import torch

    from lvlmva_desktop.core.method.settings import PipelineSettings
    from lvlmva_desktop.core.views.viewer import explain_samples

    if expl_id is not None:
        row, _ = project.explanation(expl_id)
        model_id = int(row["model_id"])
        s = PipelineSettings.from_record(json.loads(row["settings"] or "{}"))  # legacy values included
    elif model_id is None:
        raise ValueError("There is no model yet: train or import one to ask about its predictions.")
    else:
        s = settings if settings is not None else PipelineSettings()
    got = explain_samples(
        project, model_id, [sample_id], s.explain, device, state, segment=s.segment, predict=True
    )
    image, probs = got.images, got.probs[0]  # decoded and predicted once, with the attribution
    label, predicted = int(image.y[0]), int(torch.argmax(probs))
    _, descriptions = project.class_descriptions()
    classes = project.classes
    name = classes[label]
    request = CritiqueRequest(
        sample_id=sample_id,
        image=image.x[0],
        label=label,
        class_name=name,
        class_description=descriptions.get(name, ""),
        attribution=got.maps[0],
        segments=got.segments[0].long(),
        segment_evidence=got.evidence[0].tolist(),
        gt_mask=image.masks[0] if bool(image.has_mask[0]) else None,
        evidence_kind=s.segment.evidence,
    )
    verdict = "correct" if predicted == label else "wrong: a misclassification"
    note = (
        f"This image ({image.splits[0]} split) is not in the alignment set: no auditor critiqued it and it "
        f'has no verdicts. The classifier predicts "{classes[predicted]}" with '
        f"{float(probs[predicted]):.0%} confidence ({verdict}). The evidence map and its numbered segments "
        f'were computed for this conversation: the evidence for the true class "{name}".'
    )
    return request, note


def chat_for_image(
    project,
    sample_id: int,
    backend: LVLMBackend,
    device,
    expl_id: int | None = None,
    model_id: int | None = None,
    settings=None,
    templates: TemplateSet | None = None,
    state: TaskState | None = None,
) -> ChatSession:
    """A conversation about any image: ``chat_for_sample`` for an image of the explanation's alignment set;
    for any other, the evidence computed now and the prediction (``image_request``), with the transcript
    stored without an explanation."""
    if chat_explanation(project, expl_id, sample_id) is not None:
        return chat_for_sample(project, expl_id, sample_id, backend, templates)
    request, note = image_request(project, sample_id, device, expl_id, model_id, settings, state)
    history = [(m["role"], m["text"]) for m in project.chat_messages(None, sample_id)]
    return ChatSession(
        backend,
        request,
        templates or TemplateSet.for_project(project),
        history=history,
        note=note,
        explanation_id=None,
    )


def ask_and_store(
    project,
    expl_id: int,
    sample_id: int,
    chat: ChatSession,
    question: str,
    on_piece: Callable[[str], None] | None = None,
    state: TaskState | None = None,
    settings: GenerationSettings | None = None,
) -> str:
    """Stream the answer (each piece to ``on_piece``) and store question and answer once it is complete.

    Both are stored together after the answer: a failed or cancelled question leaves no unanswered turn.
    """
    question = question.strip()
    if not question:
        raise ValueError("The question is empty.")
    pieces: list[str] = []
    stream = chat.ask(question, settings)
    try:
        for piece in stream:
            if state is not None:
                state.check()  # a cancel closes the stream, which stops the generation
            pieces.append(piece)
            if on_piece is not None:
                on_piece(piece)
    finally:
        stream.close()
    if state is not None:
        state.check()
    answer = "".join(pieces).strip()
    identity = chat.backend.identity()
    model = json.dumps(identity, default=str)
    project.add_chat_exchange(
        expl_id,
        sample_id,
        [("user", question, ""), ("assistant", answer, model)],
        {
            "explanation_id": expl_id,
            "sample_id": sample_id,
            "model": identity,
            "trust_remote_code": audit.trust_remote_code_in(identity),
        },
        {"question": audit.text_hash(question), "answer": audit.text_hash(answer)},
    )
    return answer


def class_notes(project, expl_id: int, class_name: str) -> list[dict]:
    """The critic's notes about every critiqued image of one class, with their current verdicts."""
    if class_name not in project.classes:
        raise ValueError(f"Unknown class '{class_name}'; classes are {', '.join(project.classes)}.")
    label = project.classes.index(class_name)
    labels = {r["id"]: r["label"] for r in project.samples("train")}
    eff = project.effective_verdicts(expl_id)
    notes = []
    for c in project.critiques(expl_id):
        if labels.get(c["sample_id"]) == label:
            v = eff.get(c["sample_id"], {})
            verdicts = ", ".join(f"{s + 1} {d['verdict']}" for s, d in sorted(v.items()))
            notes.append({"text": c["text"], "verdicts": verdicts})
    return notes


def summarise_class(
    project,
    expl_id: int,
    class_name: str,
    backend: LVLMBackend,
    templates: TemplateSet | None = None,
    settings: GenerationSettings | None = None,
    state: TaskState | None = None,
) -> str:
    """The LVLM's summary of what the model relies on for one class, stored with the explanation."""
    notes = class_notes(project, expl_id, class_name)
    _, desc = project.class_descriptions()
    text = class_summary(
        backend,
        class_name,
        desc.get(class_name, ""),
        notes,
        templates or TemplateSet.for_project(project),
        settings,
        state=state,
    )
    if state is not None:
        state.check()
    project.add_chat_message(
        expl_id, None, SUMMARY_ROLE, f"[{class_name}] {text}", json.dumps(backend.identity(), default=str)
    )
    return text


def class_summaries(project, expl_id: int, class_name: str) -> list[dict]:
    """The stored summaries of one class, oldest first: [{text, created, author, model}, ...]."""
    prefix = f"[{class_name}] "
    return [
        {
            "text": m["text"][len(prefix) :],
            "created": m["created"],
            "author": m["author"],
            "model": m["model"],
        }
        for m in project.chat_messages(expl_id, None)
        if m["role"] == SUMMARY_ROLE and m["text"].startswith(prefix)
    ]
