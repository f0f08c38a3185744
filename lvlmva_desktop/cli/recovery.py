"""The command line's crash recovery: ``lvlmva resume`` continues a step a killed process left unfinished.

lvlmva status proj                      # lists interrupted runs
lvlmva resume proj                      # the latest interrupted step (a critique goes on where it stopped)
lvlmva resume proj --run 7 --model-dir ~/models/SmolVLM   # an LVLM critique needs its LVLM again
"""

from __future__ import annotations

import argparse
from typing import Any


def _lvlm_critic_factory(args: argparse.Namespace, project: Any, opened: list) -> Any:
    """The LVLM named on this command line, with the critic settings the interrupted run recorded (the one
    critic factory's LVLM builder, lvlm/factory.py); None when no LVLM is named."""
    if not (
        getattr(args, "model_dir", None)
        or getattr(args, "endpoint", None)
        or getattr(args, "lvlm_config", None)
    ):
        return None
    from lvlmva_desktop.cli.critic_args import open_lvlm
    from lvlmva_desktop.lvlm.factory import lvlm_builder

    def open_backend() -> Any:
        backend = open_lvlm(args)
        opened.append(backend)
        return backend

    return lvlm_builder(project, open_backend=open_backend)


def cmd_resume(args: argparse.Namespace) -> None:
    from lvlmva_desktop.cli.common import Bar, device_of, open_project
    from lvlmva_desktop.core.store import recovery

    opened: list = []
    with open_project(args) as p:
        row = recovery.pick(p, args.run)
        print(recovery.describe(p, row))
        try:
            with Bar(args.quiet) as state:
                done = recovery.resume(
                    p, int(row["id"]), device_of(args), state, _lvlm_critic_factory(args, p, opened)
                )
        finally:
            for backend in opened:
                backend.close()
        r = done.result
        what = {
            "train": f": model version {r}",
            "align": f": model version {r}",
            "import_model": f": model version {r}",
            "sample": f": alignment set {r}",
            "explain": f": explanation {r}",
        }.get(done.kind, "")
        if done.kind == "critique":
            what = (
                f": {r['n_images']} more images critiqued ({r.get('skipped_already_critiqued', 0)} were done "
                f"before the interruption), verdicts {r['verdicts']}"
            )
        elif done.kind == "pipeline":
            what = f": results in {r['results_file']}"
        print(f"Resumed run {done.old_run} as run {done.new_run}{what}.")


def interrupted_lines(project: Any) -> list[str]:
    """For ``lvlmva status``: one line per interrupted run that was not resumed yet."""
    from lvlmva_desktop.core.store import recovery

    rows = recovery.resumable_runs(project)
    if not rows:
        return []
    lines = ["Interrupted steps (the program stopped while they ran):"]
    lines += [f"  {recovery.describe(project, r)}" for r in rows]
    lines.append(f"  `lvlmva resume {project.root}` continues the latest; --run N picks another.")
    return lines


def register(sub: Any, add: Any) -> None:
    from lvlmva_desktop.cli.critic_args import add_lvlm_args

    sp = add(
        "resume",
        cmd_resume,
        "continue a step that was interrupted (the program was killed or crashed while it ran)",
    )
    sp.add_argument("--run", type=int, help="the interrupted run to resume (default: the latest)")
    add_lvlm_args(sp)
