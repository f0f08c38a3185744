"""The command line's LVLM commands: health check, the LVLM critic's options, chat, summaries, prompts.

lvlmva lvlm-check --model-dir ~/models/Qwen2.5-VL-7B-Instruct
lvlmva lvlm-check --endpoint http://gpu-server:8000/v1 --lvlm-model qwen2.5-vl --api-key-env SITE_LLM_KEY
lvlmva critique proj --critic lvlm --model-dir ~/models/SmolVLM [--one-call]
lvlmva ask proj --sample 12 "Why is segment 2 spurious?" --model-dir ...
lvlmva summary proj --class benign --model-dir ...
lvlmva prompts proj [--show critic.j2 | --export DIR | --load critic.j2 FILE]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lvlmva_desktop.cli.critic_args import add_lvlm_args, open_lvlm


def cmd_lvlm_check(args):
    """The back-end's health check, then one request of each kind the critique, the chat and the summary
    send (lvlm/check.py): a model that cannot take one of them is refused here, before any work."""
    from lvlmva_desktop.lvlm.check import CALL_KINDS, check_backend

    backend = open_lvlm(args)
    try:
        rep = check_backend(backend)
    finally:
        backend.close()
    ident = rep.identity
    print(f"LVLM: {json.dumps(ident, default=str)}")
    print(f"device: {rep.device}   memory: {rep.memory}   {rep.seconds:.1f} s")
    print(f"test generation: {rep.test_output!r}")
    what = dict(CALL_KINDS)
    for c in rep.calls:
        result = f"{c['output']!r}" if c["ok"] else f"FAILED: {c['problem']}"
        print(
            f"{c['kind']:8s} {'ok' if c['ok'] else '--'}  {c['seconds']:5.1f} s  {what[c['kind']]}: {result}"
        )
    for w in rep.warnings:
        print(f"warning: {w}")
    if not rep.ok:
        raise RuntimeError(f"health check failed: {rep.problem}")
    print(
        "health check passed" + (" with warnings" if rep.warnings else "") + ": every kind of request works"
    )


def cmd_ask(args):
    from lvlmva_desktop.cli.common import latest, open_project
    from lvlmva_desktop.lvlm.chat import ask_and_store, chat_for_sample, require_in_alignment_set

    if not args.question.strip():
        raise ValueError("The question is empty.")
    with open_project(args) as p:
        eid = latest(p, "explanations", args.explanation, "explanation")
        require_in_alignment_set(p, eid, args.sample)  # before the (slow) model loads
        backend = open_lvlm(args)
        try:
            chat = chat_for_sample(p, eid, args.sample, backend)

            def show(piece: str) -> None:
                sys.stdout.write(piece)
                sys.stdout.flush()

            ask_and_store(p, eid, args.sample, chat, args.question, on_piece=show)
            print()
        finally:
            backend.close()


def cmd_summary(args):
    from lvlmva_desktop.cli.common import latest, open_project
    from lvlmva_desktop.lvlm.chat import class_notes, summarise_class

    with open_project(args) as p:
        eid = latest(p, "explanations", args.explanation, "explanation")
        if not class_notes(p, eid, args.cls):  # unknown class or nothing to summarise: say so before loading
            raise ValueError(f"There are no critiques of class '{args.cls}' to summarise yet.")
        backend = open_lvlm(args)
        try:
            text = summarise_class(p, eid, args.cls, backend)
        finally:
            backend.close()
        print(text)


def cmd_prompts(args):
    from lvlmva_desktop.cli.common import open_project
    from lvlmva_desktop.lvlm.prompts import TemplateSet, validate_template

    with open_project(args) as p:
        if args.load:
            name, path = args.load
            text = Path(path).read_text(encoding="utf-8")
            validate_template(name, text)
            print(f"{name}: version {p.save_prompt_template(name, text)}")
            return
        ts = TemplateSet.for_project(p)
        if args.show:
            if args.show not in ts.texts:
                raise ValueError(f"Unknown template '{args.show}'; templates are {', '.join(ts.texts)}.")
            print(ts.texts[args.show])
            return
        if args.export:
            out = Path(args.export)
            out.mkdir(parents=True, exist_ok=True)
            for name, text in ts.texts.items():
                (out / name).write_text(text, encoding="utf-8")
            print(
                f"Wrote {len(ts.texts)} templates to {out}; edit them and load them back with --load NAME FILE."
            )
            return
        for name, digest in ts.hashes().items():
            print(f"{name:22s} version {ts.versions[name]:3d}  sha256 {digest[:16]}")


def register(sub, add) -> None:
    sp = add(
        "lvlm-check",
        cmd_lvlm_check,
        "load the LVLM and check it: identity, device, one request of each kind the critique sends",
        project=False,
    )
    add_lvlm_args(sp)

    sp = add("ask", cmd_ask, "ask the LVLM about one image of the alignment set (the answer streams)")
    sp.add_argument("question")
    sp.add_argument("--sample", type=int, required=True)
    sp.add_argument("--explanation", type=int)
    add_lvlm_args(sp)

    sp = add("summary", cmd_summary, "the LVLM's summary of what the model relies on for one class")
    sp.add_argument("--class", dest="cls", required=True)
    sp.add_argument("--explanation", type=int)
    add_lvlm_args(sp)

    sp = add("prompts", cmd_prompts, "list, show, export or load this project's prompt templates")
    sp.add_argument("--show", metavar="NAME")
    sp.add_argument("--export", metavar="DIR")
    sp.add_argument("--load", nargs=2, metavar=("NAME", "FILE"))
