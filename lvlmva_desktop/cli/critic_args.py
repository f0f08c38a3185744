"""The critic chosen on the command line (--critic, and an LVLM's --model-dir / --endpoint options), built
by the one critic factory (lvlm/factory.py)."""

from __future__ import annotations

import argparse
import json
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
    from lvlmva_desktop.lvlm.backend import LVLMError
    from lvlmva_desktop.lvlm.config import LVLMConfig

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
    from lvlmva_desktop.lvlm.config import open_backend

    return open_backend(lvlm_config(args))


def lvlm_critic_options(args: argparse.Namespace) -> dict:
    """The LVLM critic's settings chosen with the critique options (lvlm.critic.CriticSettings' names)."""
    return {
        "one_call": bool(args.one_call),
        "batch_size": args.batch_size,
        "use_cache": not args.no_cache,
        "critic_max_new_tokens": args.max_new_tokens,
    }


CRITIC_CHOICE = (
    "Choose the critic with --critic: lvlm (a vision-language model: --model-dir FOLDER or --server URL), "
    "expert (your own verdicts, entered with `lvlmva verdict`) or simulated (a ground-truth stand-in for "
    "benchmarks, with --verdict-accuracy)."
)


def critic_spec_from_args(args: argparse.Namespace) -> dict:
    """The critic chosen on the command line as the identity a critique run records (core.method.critic)."""
    from lvlmva_desktop.core.method.critic import critic_spec

    if args.critic is None:
        raise ValueError(CRITIC_CHOICE)
    if args.critic == "simulated":
        acc = args.verdict_accuracy
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"--verdict-accuracy must be between 0 and 1, got {acc}.")
        seed = args.critic_seed
        if seed is None:  # --seed reaches the simulated critic too
            seed = getattr(args, "seed", None) or 0
        return critic_spec("simulated", verdict_accuracy=acc, seed=seed)
    if args.critic == "lvlm":
        return critic_spec("lvlm", lvlm_settings=lvlm_critic_options(args))
    return critic_spec(args.critic)


def make_critic(args: argparse.Namespace, project, expl_id: int | None):
    """The chosen critic, built by the one critic factory (lvlm/factory.py); an LVLM is opened here."""
    from lvlmva_desktop.lvlm.factory import build_critic

    return build_critic(critic_spec_from_args(args), project, expl_id, open_backend=lambda: open_lvlm(args))
