"""The command line's LVLM commands: health check, the LVLM critic's options, chat, summaries, prompts.

lvlmva lvlm-check --model-dir ~/models/Qwen2.5-VL-7B-Instruct
lvlmva lvlm-check --endpoint http://gpu-server:8000/v1 --lvlm-model qwen2.5-vl --api-key-env SITE_LLM_KEY
lvlmva critique proj --critic lvlm --model-dir ~/models/SmolVLM [--one-call]
lvlmva ask proj --sample 12 "Why is segment 2 spurious?" --model-dir ...
lvlmva summary proj --class benign --model-dir ...
lvlmva prompts proj [--show critic.j2 | --export DIR | --load critic.j2 FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_lvlm_args(sp: argparse.ArgumentParser) -> None:
    g = sp.add_argument_group("LVLM (a local model folder or an OpenAI-compatible server)")
    g.add_argument("--model-dir", help="folder with the LVLM's weights (config.json, *.safetensors)")
    g.add_argument("--endpoint", help="base URL of an OpenAI-compatible server, e.g. http://host:8000/v1")
    g.add_argument("--lvlm-model", help="model name on the server (with --endpoint)")
    g.add_argument("--api-key-env", help="NAME of the environment variable holding the server's API key")
    g.add_argument("--lvlm-device", default="auto", help="GPU for a local LVLM: auto, cpu, cuda, cuda:1 ...")
    g.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code shipped in the model folder (off by default; recorded with every critique)",
    )
    g.add_argument("--lvlm-config", help="JSON file with these settings (see lvlm/config.py)")


def lvlm_config(args: argparse.Namespace):
    from .lvlm.backend import LVLMError
    from .lvlm.config import LVLMConfig

    if getattr(args, "lvlm_config", None):
        cfg = LVLMConfig.from_dict(json.loads(Path(args.lvlm_config).read_text(encoding="utf-8")))
    elif getattr(args, "endpoint", None):
        cfg = LVLMConfig(
            kind="endpoint",
            base_url=args.endpoint,
            model=args.lvlm_model or "",
            api_key_env=args.api_key_env or "",
        )
    elif getattr(args, "model_dir", None):
        cfg = LVLMConfig(
            kind="local",
            folder=args.model_dir,
            device=args.lvlm_device,
            trust_remote_code=bool(args.trust_remote_code),
        )
    else:
        raise LVLMError("Say which LVLM to use: --model-dir FOLDER, or --endpoint URL --lvlm-model NAME.")
    cfg.validate()
    return cfg


def open_lvlm(args: argparse.Namespace):
    from .lvlm.config import open_backend

    return open_backend(lvlm_config(args))


def lvlm_critic_options(args: argparse.Namespace) -> dict:
    """The LVLM critic's settings chosen with the critique options (lvlm.critic.CriticSettings' names)."""
    return {
        "one_call": bool(args.one_call),
        "batch_size": args.batch_size,
        "use_cache": not args.no_cache,
        "critic_max_new_tokens": args.max_new_tokens,
    }


def cmd_lvlm_check(args):
    """The back-end's health check, then one request of each kind the critique, the chat and the summary
    send (lvlm/check.py): a model that cannot take one of them is refused here, before any work."""
    from .lvlm.check import CALL_KINDS, check_backend

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
    from .cli import _latest, _open
    from .lvlm.chat import ask_and_store, chat_for_sample, require_in_alignment_set

    if not args.question.strip():
        raise ValueError("The question is empty.")
    with _open(args) as p:
        eid = _latest(p, "explanations", args.explanation, "explanation")
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
    from .cli import _latest, _open
    from .lvlm.chat import class_notes, summarise_class

    with _open(args) as p:
        eid = _latest(p, "explanations", args.explanation, "explanation")
        if not class_notes(p, eid, args.cls):  # unknown class or nothing to summarise: say so before loading
            raise ValueError(f"There are no critiques of class '{args.cls}' to summarise yet.")
        backend = open_lvlm(args)
        try:
            text = summarise_class(p, eid, args.cls, backend)
        finally:
            backend.close()
        print(text)


def cmd_prompts(args):
    from .cli import _open
    from .lvlm.prompts import TemplateSet, validate_template

    with _open(args) as p:
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
