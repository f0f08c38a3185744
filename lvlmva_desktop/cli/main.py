"""The `lvlmva` command: its argument parser (one sub-command per step, see cli/__init__.py) and main()."""

from __future__ import annotations

import argparse
import logging
import sys

from lvlmva_desktop.cli.steps import (
    add_preprocess_args,
    architecture_arg,
    cmd_align,
    cmd_critique,
    cmd_demo,
    cmd_describe,
    cmd_evaluate,
    cmd_explain,
    cmd_generate,
    cmd_import,
    cmd_import_model,
    cmd_qualify,
    cmd_run,
    cmd_sample,
    cmd_settings,
    cmd_show,
    cmd_status,
    cmd_train,
    cmd_verdict,
)


def build_parser() -> argparse.ArgumentParser:
    from lvlmva_desktop.cli.audit import register as register_audit
    from lvlmva_desktop.cli.critic_args import add_lvlm_args
    from lvlmva_desktop.cli.lvlm import register as register_lvlm
    from lvlmva_desktop.cli.recovery import register as register_recovery
    from lvlmva_desktop.cli.report import register as register_report
    from lvlmva_desktop.cli.spotcheck import register as register_spot_check

    ap = argparse.ArgumentParser(prog="lvlmva", description="LVLM-aided visual alignment, headless.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = ap.add_subparsers(dest="command", required=True)

    def add(name, fn, help_, project=True, settings=False):
        sp = sub.add_parser(name, help=help_, description=help_)
        if project:
            sp.add_argument("project", help="project folder")
            sp.add_argument(
                "--read-only",
                action="store_true",
                help="open the project without changing it (an archived copy, a read-only mount); a command "
                "that would change it is refused in words",
            )
        sp.add_argument("--quiet", action="store_true", help="no progress bar")
        sp.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
        if settings:
            sp.add_argument(
                "--settings",
                metavar="FILE",
                help="JSON file of pipeline settings (see `lvlmva settings`); wins over the settings saved in "
                "the window",
            )
            sp.add_argument(
                "--set",
                action="append",
                metavar="NAME=VALUE",
                help="override one setting, e.g. align.lambda=2 or train.epochs=3 (wins over --settings; "
                "`lvlmva settings --list` lists the names)",
            )
            sp.add_argument("--seed", type=int, help="seed for every step")
            sp.add_argument(
                "--arch",
                type=architecture_arg,
                help="mlp, small_cnn, or any torchvision classifier (resnet18, densenet121 ...)",
            )
        sp.set_defaults(func=fn)
        return sp

    sp = add("generate", cmd_generate, "generate a benchmark data set", project=False)
    sp.add_argument("name", choices=["decoymnist", "isic-like", "elpv-tags", "surface"])
    sp.add_argument("out", help="output folder")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="generator parameter, e.g. n_train=500"
    )

    sp = add(
        "import", cmd_import, "import images (class folders or CSV manifest); creates the project if needed"
    )
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="CSV manifest with columns path,label[,group,split,mask]")
    src.add_argument(
        "--folder", help="folder with one subfolder per class (optionally under train/ and test/)"
    )
    sp.add_argument("--name", help="project name (new projects)")
    sp.add_argument(
        "--image-size", type=int, nargs="+", metavar="PX", help="model input size H [W] (new projects)"
    )
    sp.add_argument("--channels", type=int, choices=[1, 3], help="1 = grayscale, 3 = RGB (new projects)")
    sp.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of rows without a split put in test"
    )
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--report", help="write the validation report as JSON here")

    sp = add("describe", cmd_describe, "show or set what each class must be judged by")
    sp.add_argument("--class", dest="cls", nargs=2, action="append", metavar=("NAME", "TEXT"))
    sp.add_argument("--file", help="JSON {class: description}")
    sp.add_argument(
        "--defaults",
        choices=["decoymnist", "isic-like", "elpv-tags", "surface"],
        help="the built-in descriptions of a benchmark set",
    )

    sp = add("train", cmd_train, "step 1: train the original model with cross-entropy", settings=True)
    sp.add_argument(
        "--weights", help="local weights file to start from, e.g. ImageNet weights (safetensors or .pth)"
    )
    add_preprocess_args(sp)

    sp = add("import-model", cmd_import_model, "step 1: register an existing model's weights")
    sp.add_argument("weights", help="the trained classifier's state dict (safetensors, or .pth of tensors)")
    sp.add_argument(
        "--arch",
        required=True,
        type=architecture_arg,
        help="mlp, small_cnn, or any torchvision classifier: resnet18/34/50, densenet121, efficientnet_b0, "
        "convnext_tiny, mobilenet_v3_large, vit_b_16, swin_t, ...",
    )
    add_preprocess_args(sp)

    sp = add("sample", cmd_sample, "step 2: choose the alignment set (low entropy by default)", settings=True)
    sp.add_argument("--model", type=int, help="model version (default: latest)")

    sp = add(
        "explain", cmd_explain, "steps 3-4: DeepLIFT-SHAP attributions and PPEPS-WGM segments", settings=True
    )
    sp.add_argument("--set-id", type=int, help="alignment set (default: latest)")
    sp.add_argument("--model", type=int, help="model version (default: the set's)")

    def critic_args(sp):
        sp.add_argument(
            "--critic",
            choices=["lvlm", "simulated", "expert"],
            help="required: lvlm = a vision-language model (see the LVLM options); expert = your stored "
            "verdicts; simulated = ground-truth critic for BENCHMARKS ONLY",
        )
        sp.add_argument("--one-call", action="store_true", help="LVLM critic and judge in one generation")
        sp.add_argument("--batch-size", type=int, default=8, help="LVLM requests per generation batch")
        sp.add_argument(
            "--max-new-tokens",
            type=int,
            default=768,
            help="longest critic answer, in tokens (the judge's: 200)",
        )
        sp.add_argument("--no-cache", action="store_true", help="ask the LVLM again even if nothing changed")
        add_lvlm_args(sp)
        sp.add_argument(
            "--verdict-accuracy",
            type=float,
            default=1.0,
            help="simulated critic: share of segment verdicts it gets right (1.0 = every segment judged "
            "exactly by its ground-truth artefact mask; the masks are still the union of whole segments)",
        )
        sp.add_argument(
            "--critic-seed",
            type=int,
            help="simulated critic: which verdicts it gets wrong (default: --seed, else 0)",
        )

    sp = add("critique", cmd_critique, "steps 5-6: critic and judge give a verdict per segment")
    sp.add_argument("--explanation", type=int)
    critic_args(sp)

    sp = add(
        "verdict",
        cmd_verdict,
        "list verdicts, or set the expert's verdict for one segment (! marks those the consistency check "
        "holds back with the align settings of --settings, else the defaults)",
    )
    sp.add_argument("--settings", help="JSON file of pipeline settings, as given to align")
    sp.add_argument("--explanation", type=int)
    sp.add_argument("--sample", type=int)
    sp.add_argument("--segment", type=int, help="segment number, from 1")
    sp.add_argument("--set", choices=["spurious", "relevant", "undecided"])

    sp = add(
        "show",
        cmd_show,
        "show the critic's text and the verdict per segment for one image (and whether the consistency "
        "check holds it back with the align settings given)",
        settings=True,
    )
    sp.add_argument("--sample", type=int, required=True)
    sp.add_argument("--explanation", type=int)

    sp = add(
        "align",
        cmd_align,
        "steps 7-8: masks from verdicts, RRR fine-tuning into a new model version",
        settings=True,
    )
    sp.add_argument("--explanation", type=int)
    sp.add_argument("--model", type=int)

    sp = add(
        "evaluate",
        cmd_evaluate,
        "step 9: accuracy, worst-group accuracy and alignment on the test split",
        settings=True,
    )
    sp.add_argument("--models", type=int, nargs="+")
    sp.add_argument("--json", help="write the metrics here")
    sp.add_argument(
        "--no-store",
        action="store_true",
        help="measure and print without storing anything in the project (works on a read-only project)",
    )

    sp = add(
        "run", cmd_run, "steps 1-9 in one go; writes runs/run-N.json and prints the table", settings=True
    )
    sp.add_argument("--model", type=int, help="start from this model version instead of training one")
    critic_args(sp)

    sp = add(
        "qualify",
        cmd_qualify,
        "does the method work on this data? ERM, RRR with the true masks and LVLM-VA with simulated critics "
        "(needs artefact masks and groups in the manifest); the table is kept in the project and the report",
        settings=True,
    )
    sp.add_argument("--model", type=int, help="the original model (default: train one with the settings)")

    add("status", cmd_status, "what the project holds")

    sp = add("demo", cmd_demo, "build the demo project and run the whole pipeline on it", project=False)
    sp.add_argument("--folder", help="where to put the demo project (default: the user data folder)")

    register_lvlm(sub, add)
    register_recovery(sub, add)
    register_audit(sub, add)
    register_report(sub, add)
    register_spot_check(sub, add)

    sp = sub.add_parser(
        "settings",
        help="print the pipeline settings as JSON: the defaults, or those a command would use in PROJECT",
    )
    sp.add_argument("project", nargs="?", help="project folder: start from the settings saved in the window")
    sp.add_argument("--settings", metavar="FILE", help="JSON file of pipeline settings")
    sp.add_argument("--set", action="append", metavar="NAME=VALUE", help="override one setting")
    sp.add_argument(
        "--list", action="store_true", help="list every setting: name, type, default, bounds, help"
    )
    sp.set_defaults(func=cmd_settings)
    return ap


def _stdout_closed() -> bool:
    """Whether our standard output is a pipe whose reader has gone (`lvlmva show ... | head`); if so, it
    is pointed at the null device so that nothing more (the interpreter's last flush included) fails."""
    import os
    import select

    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        gone = any(ev & select.POLLERR for _, ev in poll.poll(0))  # the pipe's reader closed it
    except (OSError, ValueError, AttributeError):  # no file descriptor (a captured stream), no poll
        return False
    if gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    return gone


def main(argv: list[str] | None = None) -> int:
    from lvlmva_desktop.core.runtime.offline import enforce_offline

    enforce_offline()  # again, in case the host changed the environment since the package import
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    import sqlite3

    from lvlmva_desktop.core.runtime.jobs import Cancelled
    from lvlmva_desktop.core.store.project import ProjectError

    try:
        rc = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here at the latest, not in the interpreter's exit
    except BrokenPipeError as e:
        if not _stdout_closed():  # some other pipe (not our output): an error like any other
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0  # output piped into e.g. `head`, which had read enough: nothing to tell
    except (ProjectError, ValueError, OSError, RuntimeError) as e:
        from lvlmva_desktop.core.runtime.secrets import scrub

        print(f"error: {scrub(e)}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    except sqlite3.DatabaseError as e:  # damage found while reading, after the open's integrity check
        from lvlmva_desktop.core.runtime.errors import describe_error

        print(f"error: {describe_error(e).message}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("cancelled; the project is consistent and the run is marked cancelled.", file=sys.stderr)
        return 130
    return rc if isinstance(rc, int) else 0  # a command may return its exit code (audit --verify)
