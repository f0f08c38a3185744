"""The command line's blind spot-check of the critic (core/method/spotcheck.py, docs/method.md).

lvlmva spot-check proj                        # 40 segments, asked one by one on the terminal
lvlmva spot-check proj --n 80 --seed 3        # more segments, a reproducible draw
lvlmva spot-check proj --expert simulated     # benchmarks: answered from the ground-truth masks

Each segment is written as a picture (the image, and the image with the segment outlined) into
PROJ/spot-check/<time>/, without the critic's verdict, and the answer is read from the terminal:
s(purious), r(elevant), u(ndecided), b(ack) or q(uit). The result is stored in the project.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ANSWER_KEYS = {"s": "spurious", "r": "relevant", "u": "undecided"}
PROMPT = "Spurious, relevant or undecided? [s/r/u; b = back, q = quit and score] "
SIMULATED = "simulated from the ground-truth artefact masks [benchmark only]"


def _ask(items, pictures, folder: Path, classes: dict[int, str]) -> list[str]:
    """Show (write) each picture and read the answer; 'b' takes the last answer back, 'q' or the end of
    the input stops. Returns the answers given, in the items' order."""
    answers: list[str] = []
    shown = -1
    while len(answers) < len(items):
        i = len(answers)
        item = items[i]
        path = folder / f"{i + 1:03d}.png"
        if shown != i:
            if not path.exists():
                pictures[i].save(path)
            print(
                f"[{i + 1} of {len(items)}] image {item.sample_id} (class {classes[item.sample_id]}): is the outlined "
                f"region (right) relevant evidence for that class, or a spurious feature?\n  picture: {path}"
            )
            shown = i
        try:
            reply = input(PROMPT).strip().lower()
        except EOFError:
            print()
            break
        if reply in ("q", "quit"):
            break
        if reply in ("b", "back"):
            if answers:
                answers.pop()
            else:
                print("  (nothing to take back)")
            continue
        if reply[:1] in ANSWER_KEYS and reply in (reply[:1], ANSWER_KEYS[reply[:1]]):
            answers.append(ANSWER_KEYS[reply[:1]])
        else:
            print("  please answer s, r, u, b or q")
    return answers


def cmd_spot_check(args: argparse.Namespace) -> int:
    from lvlmva_desktop.cli.common import latest, open_project
    from lvlmva_desktop.core.method import spotcheck as sc
    from lvlmva_desktop.core.store.project import ProjectError

    with open_project(args) as p:
        if p.read_only:
            raise ProjectError(
                "A spot-check stores its result and your answers in the project, which is open read-only here."
            )
        if args.expert == "simulated":
            from lvlmva_desktop.core.method.pipeline import has_artefact_masks

            if not has_artefact_masks(p):
                raise ProjectError(sc.NO_MASKS)
        eid = latest(p, "explanations", args.explanation, "explanation")
        items = sc.draw_sample(p, eid, n=args.n, seed=args.seed, min_evidence=args.min_evidence)
        pop = ", ".join(f"{v} {k}" for k, v in items.population.items() if v)
        print(
            f"Spot-check of the critic's verdicts on explanation {eid}: {len(items)} segments drawn at random "
            f"(seed {items.seed}) from {sum(items.population.values())} verdicts of the critic ({pop}), "
            "stratified by verdict. The critic's verdicts are not shown."
        )
        if args.n > len(items):
            print(f"(only {len(items)} verdicts of the critic can be checked, so all of them are.)")
        if args.expert == "simulated":
            expert = SIMULATED
            answers = sc.ground_truth_answers(p, eid, items)
            print(f"Expert: {expert}.")
        else:
            expert = ""
            folder = p.root / "spot-check" / time.strftime("%Y%m%d-%H%M%S")
            folder.mkdir(parents=True, exist_ok=True)
            pictures = sc.item_pictures(p, eid, items)
            labels = {r["id"]: p.classes[r["label"]] for r in p.samples()}
            print(f"Pictures: {folder} (left: the image; right: the segment outlined, the rest dimmed).")
            answers = _ask(items, pictures, folder, labels)
        if not answers:
            print("Nothing was answered; nothing was stored.")
            return 0
        result = sc.score(items, answers)
        run_id = sc.save_spot_check(p, eid, items, answers, result, expert=expert)
        stored = sc.latest_spot_check(p, eid)
        for line in sc.summary_lines(result):
            print(line)
        if result.accuracy is not None:
            print("What it means: " + stored["meaning"])
        written = stored["written"]
        print(
            f"Stored as run {run_id} (spot_check) with audit entry {stored['audit_entry']} (sample sha256 "
            f"{stored['sample_sha256'][:12]}, answers sha256 {stored['answers_sha256'][:12]}); {written} answer"
            f"{'s' * (written != 1)} written as expert verdicts. `lvlmva report` shows it."
        )
    return 0


def register(sub, add) -> None:
    sp = add(
        "spot-check",
        cmd_spot_check,
        "check the critic blind: a stratified random sample of its verdicts is shown without them and "
        "answered by you; reports its verdict accuracy (with a Wilson interval) and what that accuracy "
        "meant in the benchmark, and stores the result and your answers (as your verdicts)",
    )
    sp.add_argument("--n", type=int, default=40, help="how many segments to check (default 40)")
    sp.add_argument("--seed", type=int, help="seed of the random draw (default: a new one, recorded)")
    sp.add_argument("--explanation", type=int, help="explanation (default: latest)")
    sp.add_argument(
        "--min-evidence",
        type=float,
        default=0.01,
        help="only segments holding at least this share of their image's evidence (default 0.01)",
    )
    sp.add_argument(
        "--expert",
        choices=["simulated"],
        help="simulated: answer from the ground-truth artefact masks (BENCHMARKS ONLY; needs masks)",
    )
