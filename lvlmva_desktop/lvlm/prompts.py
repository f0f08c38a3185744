"""Prompt templates: editable Jinja2 texts, shipped in resources/prompts, versioned per project.

The program ships default templates (critic with the six reasoning steps, judge with few-shot examples,
a stricter judge for the one retry, one-call critic+judge, chat system prompt, class summary). A project
keeps its own copy in its database: the first use copies the defaults in as version 1; every edit by the
expert adds a version. Every critique records the sha256 of each template it used, so an auditor can
tell exactly which wording produced a verdict.

Templates are rendered in Jinja2's sandbox: an edited template can format text but cannot reach Python.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import DictLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from lvlmva_desktop.core.runtime.resources import ResourcesMissing
from lvlmva_desktop.core.runtime.resources import resources_dir as _resources_dir

TEMPLATE_NAMES = (
    "critic.j2",
    "judge.j2",
    "judge_strict.j2",
    "one_call.j2",
    "chat_system.j2",
    "class_summary.j2",
    "judge_examples.json",
)
# Which templates each kind of call renders (one_call includes critic.j2).
USES = {
    "critic": ("critic.j2",),
    "judge": ("judge.j2", "judge_examples.json", "judge_strict.j2"),
    "one_call": ("one_call.j2", "critic.j2", "judge_strict.j2"),
    "chat": ("chat_system.j2", "class_summary.j2"),
}


class PromptError(ValueError):
    """A template cannot be used; the message names the template and the problem."""


def resources_dir() -> Path:
    """The resources/ folder (core/runtime/resources.py); a missing one is a PromptError here."""
    try:
        return _resources_dir()
    except ResourcesMissing as exc:
        raise PromptError(str(exc)) from None


def default_texts() -> dict[str, str]:
    folder = resources_dir() / "prompts"
    return {name: (folder / name).read_text(encoding="utf-8") for name in TEMPLATE_NAMES}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class TemplateSet:
    """The texts of every template, with the version each has in its project (0 = program default)."""

    texts: dict[str, str]
    versions: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [n for n in TEMPLATE_NAMES if n not in self.texts]
        if missing:
            raise PromptError(f"Missing prompt templates: {', '.join(missing)}.")
        self._env = SandboxedEnvironment(
            loader=DictLoader(self.texts),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,
        )

    @classmethod
    def defaults(cls) -> TemplateSet:
        return cls(default_texts(), {n: 0 for n in TEMPLATE_NAMES})

    @classmethod
    def for_project(cls, project) -> TemplateSet:
        """The project's templates; the program's defaults are copied in (version 1) on first use."""
        have = project.prompt_templates()
        defaults = default_texts()
        for name in TEMPLATE_NAMES:
            if name not in have:
                project.save_prompt_template(name, defaults[name])
        have = project.prompt_templates()
        return cls(
            {n: have[n]["text"] for n in TEMPLATE_NAMES}, {n: have[n]["version"] for n in TEMPLATE_NAMES}
        )

    def hashes(self, kind: str | None = None) -> dict[str, str]:
        names = USES[kind] if kind else TEMPLATE_NAMES
        return {n: sha256_text(self.texts[n]) for n in names}

    def render(self, name: str, **context) -> str:
        try:
            return self._env.get_template(name).render(**context).strip()
        except TemplateError as e:
            raise PromptError(f"The prompt template '{name}' cannot be rendered: {e}") from e

    def judge_examples(self) -> list[dict]:
        return parse_examples(self.texts["judge_examples.json"])


def parse_examples(text: str) -> list[dict]:
    """The judge's few-shot pairs; every pair needs a non-empty critic text and answer."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PromptError(f"The judge's examples are not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise PromptError("The judge's examples must be a list of {text, answer} pairs.")
    for i, ex in enumerate(data, 1):
        if not isinstance(ex, Mapping) or not str(ex.get("text", "")).strip():
            raise PromptError(f"Judge example {i} has no critic text.")
        if not str(ex.get("answer", "")).strip():
            raise PromptError(f"Judge example {i} has no answer.")
    return [{"text": str(ex["text"]), "answer": str(ex["answer"])} for ex in data]


def validate_template(name: str, text: str) -> None:
    """Raise PromptError if an edited template would not render (checked before it is saved)."""
    if name not in TEMPLATE_NAMES:
        raise PromptError(f"Unknown template '{name}'; templates are {', '.join(TEMPLATE_NAMES)}.")
    if name == "judge_examples.json":
        parse_examples(text)
        return
    texts = dict(default_texts())
    texts[name] = text
    ts = TemplateSet(texts)
    segs = [
        {"number": 1, "evidence": 0.6, "where": "the centre"},
        {"number": 2, "evidence": 0.4, "where": "the top left"},
    ]
    image = {"class_name": "example", "class_description": "an example description", "segments": segs}
    judge = {"critic_text": "Segment 1: relevant\nSegment 2: spurious", "n_segments": 2}
    # each template gets exactly what its call site passes, so a variable it cannot have is caught now
    contexts = {
        "critic.j2": [("critic.j2", image), ("one_call.j2", image)],
        "one_call.j2": [("one_call.j2", image)],
        "judge.j2": [("judge.j2", {**judge, "examples": ts.judge_examples()})],
        "judge_strict.j2": [("judge_strict.j2", judge)],
        "chat_system.j2": [
            (
                "chat_system.j2",
                {
                    **image,
                    "verdicts": [{"number": 1, "verdict": "relevant", "source": "critic"}],
                    "critic_text": judge["critic_text"],
                },
            ),
        ],  # fmt: skip
        "class_summary.j2": [
            (
                "class_summary.j2",
                {
                    "class_name": "example",
                    "class_description": "d",
                    "notes": [{"text": "notes", "verdicts": "1 relevant"}],
                },
            ),
        ],  # fmt: skip
    }
    for template, context in contexts[name]:
        ts.render(template, **context)
