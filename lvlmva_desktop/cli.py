"""The headless twin of the GUI: every pipeline step as a command, scriptable and reproducible.

lvlmva generate isic-like data/isic            # a benchmark data set (CSV manifest + masks)
lvlmva import proj --csv data/isic/manifest.csv --image-size 64 --channels 3
lvlmva describe proj --defaults isic-like      # or --class NAME "text" ...
lvlmva train proj                              # step 1
lvlmva sample proj --n 200                     # step 2
lvlmva explain proj                            # steps 3-4
lvlmva critique proj --critic simulated --verdict-accuracy 0.87   # steps 5-6 (benchmark stand-in)
lvlmva critique proj --critic lvlm --model-dir ~/models/SmolVLM   # steps 5-6 with an LVLM
lvlmva verdict proj --sample 12 --segment 2 --set spurious        # the expert's word
lvlmva align proj                              # steps 7-8
lvlmva evaluate proj                           # step 9
lvlmva run proj                                # all of it, one results JSON
lvlmva report proj --out audit/                # the audit report: report.html and report.pdf
lvlmva spot-check proj --n 40                  # check the critic blind: its accuracy, with an interval
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("lvlmva")


class _Bar:
    """A TaskState whose progress drives a tqdm bar on stderr, with an estimate of the time left.

    A job's progress may go back: the LVLM critic reports its critic, judge and strict-retry passes over
    the same share of the bar, one after the other. Each time the progress goes back a new stage begins:
    the bar starts over from there and the time left is measured anew on that stage's own pace
    (core.jobs.TimeLeft forgets the earlier stage), "unknown" until that pace is known. tqdm's own
    estimate is not shown: it divides by the average pace since the start, so a bar that went back from
    100 % to 5 % after five minutes said more than an hour. ``clock`` gives seconds (injectable for tests).
    """

    def __init__(self, quiet: bool, clock=None, file=None) -> None:
        import time

        from .core.jobs import TaskState, TimeLeft

        self._clock = clock or time.monotonic
        self._new_estimate = lambda: TimeLeft(clock=self._clock)
        self._time_left = self._new_estimate()
        self._last = 0.0
        self.stage = 1
        self.seconds_left: float | None = None  # the current stage's estimate; None while unknown
        self.bar = (
            None
            if quiet
            else tqdm(
                total=1000,
                unit="‰",
                file=file or sys.stderr,
                leave=False,
                bar_format="{desc:30.30} {percentage:3.0f}%|{bar}| {elapsed}{postfix}",
            )
        )
        self.state = TaskState(on_progress=self._progress, on_message=self._message)

    def _progress(self, frac: float, msg: str) -> None:
        if frac < self._last - 1e-9:  # went back: a new stage with its own pace
            self.stage += 1
            self._time_left = self._new_estimate()
        self._last = frac
        left = self._time_left.update(frac)
        self.seconds_left = None if left < 0 else left
        if self.bar is not None:
            self.bar.n = int(frac * 1000)
            self.bar.set_description_str(msg or "", refresh=False)
            self.bar.set_postfix_str(self.left_text(), refresh=False)
            self.bar.refresh()

    def left_text(self) -> str:
        """The time left as the bar shows it: "about 1:05 left", or "time left unknown"."""
        if self.seconds_left is None:
            return "time left unknown"
        m, s = divmod(int(round(self.seconds_left)), 60)
        h, m = divmod(m, 60)
        return f"about {h}:{m:02d}:{s:02d} left" if h else f"about {m:d}:{s:02d} left"

    def _message(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self.state

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def _pipeline_settings(args: argparse.Namespace, tell="stdout"):
    """The settings a command runs with: the project's saved settings (what the expert chose in the window),
    then ``--settings FILE``, then ``--set NAME=VALUE``, then the command's own flags (--arch, --seed), each
    winning over the ones before (core/settings_schema.py). Prints one line per setting that is not its
    default, saying where it came from (to ``tell``: "stdout", a file, or None for nothing)."""
    from .core.settings_schema import describe_sources, resolve

    flags: dict = {}
    if getattr(args, "arch", None):
        flags["arch"] = (args.arch, "--arch")
    if getattr(args, "seed", None) is not None:
        for sec in ("train", "sampling", "explain", "segment", "align"):
            flags[f"{sec}.seed"] = (args.seed, "--seed")
    settings, sources = resolve(
        getattr(args, "project", None),
        getattr(args, "settings", None),
        getattr(args, "set", None) or (),
        flags,
    )
    if tell is not None:
        tell = sys.stdout if tell == "stdout" else tell
        for line in describe_sources(settings, sources):
            print(line, file=tell)
    return settings


def _open(args: argparse.Namespace):
    from .core.project import Project

    project = Project.open(args.project, read_only=bool(getattr(args, "read_only", False)))
    tell_notes(project)
    return project


def tell_notes(project) -> None:
    """What the opening found that the user should know (a read-only folder, unsaved log changes)."""
    for note in getattr(project, "notes", []):
        print(f"note: {note}", file=sys.stderr)


def _device(args: argparse.Namespace):
    from .core.devices import resolve_device

    return resolve_device(getattr(args, "device", None))


CRITIC_CHOICE = (
    "Choose the critic with --critic: lvlm (a vision-language model: --model-dir FOLDER or --server URL), "
    "expert (your own verdicts, entered with `lvlmva verdict`) or simulated (a ground-truth stand-in for "
    "benchmarks, with --verdict-accuracy)."
)


def critic_spec_from_args(args: argparse.Namespace) -> dict:
    """The critic chosen on the command line as the identity a critique run records (core.critic)."""
    from .core.critic import critic_spec

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
        from .cli_lvlm import lvlm_critic_options

        return critic_spec("lvlm", lvlm_settings=lvlm_critic_options(args))
    return critic_spec(args.critic)


def _make_critic(args: argparse.Namespace, project, expl_id: int | None):
    """The chosen critic, built by the one critic factory (lvlm/factory.py); an LVLM is opened here."""
    from .cli_lvlm import open_lvlm
    from .lvlm.factory import build_critic

    return build_critic(critic_spec_from_args(args), project, expl_id, open_backend=lambda: open_lvlm(args))


def _latest(project, table: str, given: int | None, what: str) -> int:
    if given is not None:
        return given
    got = project.latest_id(table)
    if got is None:
        raise ValueError(f"This project has no {what} yet; run the step that makes it first.")
    return got


# -- commands -------------------------------------------------------------------------------------
def cmd_generate(args):
    from .core.benchsets import GENERATORS

    with _Bar(args.quiet) as state:
        params = {k: _parse_value(v) for k, v in (p.split("=", 1) for p in args.param or [])}
        path = GENERATORS[args.name](args.out, seed=args.seed, state=state, **params)
    print(f"Wrote {args.name} (seed {args.seed}): {path}")


def cmd_import(args):
    from .core.data import import_class_folders, import_csv_manifest
    from .core.project import Project

    root = Path(args.project)
    existing = (root / "project.json").exists()
    classes = None
    if existing:
        with Project.open(root) as p:
            classes = p.classes
    with _Bar(args.quiet) as state:
        if args.csv:
            report = import_csv_manifest(
                args.csv,
                classes=classes,
                test_fraction=args.test_fraction,
                seed=args.seed or 0,
                state=state,
            )
        else:
            report = import_class_folders(
                args.folder,
                classes=classes,
                test_fraction=args.test_fraction,
                seed=args.seed or 0,
                state=state,
            )
    if not report.samples:
        print(report.summary())
        raise ValueError("No usable image was found; nothing was imported.")
    if existing:
        project = Project.open(root)
    else:
        channels = args.channels
        if channels is None:
            channels = 1 if all(_is_gray(s.path) for s in report.samples[:50]) else 3
        size = (
            tuple(args.image_size) if args.image_size else (report.samples[0].height, report.samples[0].width)
        )
        if len(size) == 1:
            size = (size[0], size[0])
        project = Project.create(root, args.name or root.name, report.classes, size, channels)
    with project:
        added = project.add_samples(report)
        print(report.summary())
        table = report.class_group_table()
        if table:
            print(table)
        print(f"{added} new images added to project {root} ({len(project.samples())} in all).")
        if args.report:
            Path(args.report).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")


def _is_gray(path: str) -> bool:
    from .core.images import read_image

    return read_image(path).shape[2] == 1


def cmd_describe(args):
    with _open(args) as p:
        _, current = p.class_descriptions()
        desc = dict(current)
        if args.defaults:
            from .core.benchsets import default_class_descriptions

            desc.update(default_class_descriptions(args.defaults))
        if args.file:
            desc.update(json.loads(Path(args.file).read_text(encoding="utf-8")))
        for name, text in args.cls or []:
            if name not in p.classes:
                raise ValueError(f"'{name}' is not a class of this project ({', '.join(p.classes)}).")
            desc[name] = text
        if args.defaults or args.file or args.cls:
            version = p.set_class_descriptions(desc)
            print(f"Saved class descriptions as version {version}.")
        for c in p.classes:
            print(f"{c}: {desc.get(c) or '(not described)'}")


def _arch(name: str) -> str:
    from .core.architectures import check_architecture

    try:
        return check_architecture(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _preprocess_args(sp: argparse.ArgumentParser) -> None:
    g = sp.add_argument_group(
        "preprocessing (recorded with the model version; default: what the weights were trained with)"
    )
    g.add_argument("--input-size", type=int, nargs="+", metavar="PX", help="size H [W] the network takes")
    g.add_argument(
        "--resize", choices=["bilinear", "bicubic", "nearest"], help="how images are resized to it"
    )
    g.add_argument("--mean", type=float, nargs="+", metavar="V", help="per-channel mean to subtract (1 or 3)")
    g.add_argument("--std", type=float, nargs="+", metavar="V", help="per-channel std to divide by (1 or 3)")


def _preprocess(args) -> dict | None:
    given: dict = {}
    if args.input_size:
        if len(args.input_size) > 2:
            raise ValueError("--input-size takes one or two numbers (H [W]).")
        given["input_size"] = (args.input_size[0], args.input_size[-1])
    for key in ("resize", "mean", "std"):
        if getattr(args, key):
            given[key] = getattr(args, key)
    return given or None


def _describe_model(p, mid: int) -> str:
    from .core.pipeline import describe_preprocessing

    _, spec = p.load_model(mid)
    return describe_preprocessing(spec)


def cmd_train(args):
    from .core.pipeline import train_original

    s = _pipeline_settings(args)
    with _open(args) as p:
        with _Bar(args.quiet) as state:
            mid = train_original(
                p, s.arch, s.train, _device(args), state, weights=args.weights, preprocess=_preprocess(args)
            )
        print(f"Trained model version {mid} ({s.arch}); preprocessing: {_describe_model(p, mid)}.")


def cmd_import_model(args):
    from .core.pipeline import import_model

    with _open(args) as p:
        mid = import_model(p, args.weights, args.arch, _preprocess(args))
        print(f"Imported model version {mid} ({args.arch}) from {args.weights}.")
        print(f"Preprocessing: {_describe_model(p, mid)} (set it with --input-size, --mean, --std).")


def cmd_sample(args):
    from .core.pipeline import sample_alignment_set

    s = _pipeline_settings(args)
    with _open(args) as p:
        mid = _latest(p, "models", args.model, "model")
        with _Bar(args.quiet) as state:
            sid = sample_alignment_set(p, mid, s.sampling, _device(args), state)
        res = json.loads(
            p.db.execute(
                "SELECT results FROM runs WHERE id=(SELECT run_id FROM alignment_sets WHERE id=?)", (sid,)
            ).fetchone()[0]
        )
        print(
            f"Alignment set {sid}: {res['n']} images ({s.sampling.strategy}) from model {mid}; "
            f"{res['artefact_share']:.0%} carry a known artefact."
        )


def cmd_explain(args):
    from .core.pipeline import explain_alignment_set

    s = _pipeline_settings(args)
    with _open(args) as p:
        set_id = _latest(p, "alignment_sets", args.set_id, "alignment set")
        mid = (
            args.model
            or p.db.execute("SELECT model_id FROM alignment_sets WHERE id=?", (set_id,)).fetchone()[0]
        )
        with _Bar(args.quiet) as state:
            eid = explain_alignment_set(p, mid, set_id, s.explain, s.segment, _device(args), state)
        used = json.loads(p.explanation_row(eid)["settings"]).get("attribution", {})
        method = {"deeplift_shap": "DeepLIFT-SHAP", "input_x_gradient": "input x gradient"}.get(
            used.get("method"), "integrated gradients"
        )
        print(
            f"Explanation {eid}: {method} attributions and {s.segment.n_components} segments per image of set "
            f"{set_id}."
        )
        if used.get("note"):
            print(used["note"])


def cmd_critique(args):
    from .core.pipeline import run_critique

    with _open(args) as p:
        eid = _latest(p, "explanations", args.explanation, "explanation")
        critic = _make_critic(args, p, eid)
        with _Bar(args.quiet) as state:
            res = run_critique(p, eid, critic, state)
        print(f"Critique by {critic.name}: {res['n_images']} images, verdicts {res['verdicts']}.")
        if "lvlm" in res:
            u = res["lvlm"]
            print(
                f"LVLM: {u['calls']} calls, {u['prompt_tokens']} prompt + {u['generated_tokens']} generated tokens, "
                f"{u['cached']} from the cache, {u['retried']} strict retries, "
                f"{u['undecided_by_parser']} segments left undecided because the answer could not be read."
            )
        told = _verdict_accuracy_text(p, eid, res.get("verdict_accuracy"))
        if told is not None:
            print(f"Verdict accuracy against the ground truth: {told}")


NO_DECIDED_VERDICT = "n/a (no decided verdicts: every segment is undecided, nothing to compare)"


def _verdict_accuracy_text(project, expl_id: int, acc: float | None) -> str | None:
    """The critic's verdict accuracy in words; None where the data has no ground truth (acc is None).

    The figure counts an undecided verdict as wrong, so with no decided verdict at all it is 0 by
    construction and says nothing about the critic: then it is "n/a"."""
    if acc is None:
        return None
    eff = project.effective_verdicts(expl_id)
    decided = sum(d["verdict"] != "undecided" for segs in eff.values() for d in segs.values())
    if decided == 0:
        return NO_DECIDED_VERDICT
    undecided = any(d["verdict"] == "undecided" for segs in eff.values() for d in segs.values())
    return f"{acc:.3f}" + (" (undecided verdicts count as wrong)" if undecided else "")


def _results_table(project, results: dict) -> str:
    """pipeline.results_table, with the verdict accuracy told as n/a where no verdict was decided."""
    from .core.pipeline import results_table

    crit = results.get("critique") or {}
    acc = crit.get("verdict_accuracy")
    if acc is None or results.get("explanation_id") is None:
        return results_table(results)
    told = _verdict_accuracy_text(project, results["explanation_id"], acc)
    if told != NO_DECIDED_VERDICT:
        return results_table(results)
    table = results_table({**results, "critique": {**crit, "verdict_accuracy": None}})
    return f"{table}\nverdict accuracy of the critic: {told}"


def cmd_verdict(args):
    with _open(args) as p:
        eid = _latest(p, "explanations", args.explanation, "explanation")
        if args.set:
            if args.sample is None or args.segment is None:
                raise ValueError("--set needs --sample and --segment (segments are numbered from 1).")
            p.set_expert_verdict(eid, args.sample, args.segment - 1, args.set)
            print(f"Expert verdict stored: sample {args.sample}, segment {args.segment} -> {args.set}.")
        eff = p.effective_verdicts(eid)
        given = argparse.Namespace(project=args.project, settings=args.settings)  # --set is the verdict here
        held = _held_back(p, eid, _pipeline_settings(given, tell=None).align)
        for sid in sorted(eff):
            if args.sample is not None and sid != args.sample:
                continue
            parts = [
                f"{s + 1}:{d['verdict']}{'*' if d['source'] == 'expert' else ''}"
                f"{'!' if (sid, s) in held else ''}"
                for s, d in sorted(eff[sid].items())
            ]
            print(f"sample {sid}: " + "  ".join(parts))
        print("(* = the expert's verdict, overriding the critic's)")
        if held:
            print(
                f"(! = held back by the consistency check: {len(held)} 'spurious' verdict"
                f"{'s' * (len(held) != 1)} of the critic on segments that look like segments judged relevant "
                "elsewhere; align leaves them out of the masks unless you confirm them with --set spurious)"
            )


def _held_back(project, expl_id: int, settings) -> set[tuple[int, int]]:
    """(sample_id, segment) of the critic's 'spurious' verdicts that the consistency check holds back with
    these align settings, i.e. those `align` with the same settings leaves out of the masks."""
    from .core.pipeline import alignment_masks

    _, _, stats = alignment_masks(project, expl_id, settings)
    return {(int(a), int(b)) for a, b in stats["held_back_segments"]}


def cmd_show(args):
    """What the critic said about one image, and the verdict per segment with who decided it."""
    with _open(args) as p:
        eid = _latest(p, "explanations", args.explanation, "explanation")
        _, t = p.explanation(eid)
        ids = t["sample_ids"].tolist()
        if args.sample not in ids:
            raise ValueError(
                f"Image {args.sample} is not in the alignment set of explanation {eid}; "
                f"its images are {', '.join(map(str, ids[:12]))}{' ...' if len(ids) > 12 else ''}."
            )
        k = ids.index(args.sample)
        row = p.db.execute("SELECT * FROM samples WHERE id=?", (args.sample,)).fetchone()
        print(
            f"Image {args.sample}: {row['path']} (class {p.classes[row['label']]}, group {row['grp'] or '-'})"
        )
        crit = [c for c in p.critiques(eid) if c["sample_id"] == args.sample]
        if crit:
            print(f"--- {crit[-1]['critic']} ---")
            print(crit[-1]["text"])
        else:
            print("No critique yet for this image.")
        eff = p.effective_verdicts(eid).get(args.sample, {})
        held = _held_back(p, eid, _pipeline_settings(args, tell=None).align)
        raw = json.loads(crit[-1]["raw"] or "{}") if crit else {}
        unread = set(raw.get("undecided_by_parser") or [])  # segments numbered from 1
        print("--- verdicts ---")
        for s, share in enumerate(t["evidence"][k].tolist()):
            d = eff.get(s, {"verdict": "undecided", "source": "-", "author": "-"})
            if d["source"] == "-":
                who = "no verdict yet"
            elif d["verdict"] == "undecided" and d["source"] == "expert":
                who = f"left undecided by expert {d['author']}"
            elif d["verdict"] == "undecided":
                who = "the critic gave no verdict"
                if s + 1 in unread:
                    who += ": no verdict for this segment could be read from its answer"
                elif "undecided_by_parser" in raw:  # an LVLM critic whose answer was read
                    who += ": its answer says it cannot decide"
            elif d["source"] == "expert":
                who = f"decided by expert {d['author']}"
            else:
                who = f"decided by {d['source']}"
            note = ""
            if (args.sample, s) in held:
                note = (
                    "; held back by the consistency check (looks like segments judged relevant elsewhere): "
                    "not in the mask unless you confirm it"
                )
            print(f"segment {s + 1}: {d['verdict']:10s} {share:5.0%} of the evidence  ({who}{note})")


def cmd_align(args):
    from .core.pipeline import align_model

    s = _pipeline_settings(args)
    with _open(args) as p:
        eid = _latest(p, "explanations", args.explanation, "explanation")
        mid = args.model or p.db.execute("SELECT model_id FROM explanations WHERE id=?", (eid,)).fetchone()[0]
        with _Bar(args.quiet) as state:
            new = align_model(p, mid, eid, s.align, _device(args), state)
        info = json.loads(p.model_row(new)["info"] or "{}")
        print(f"Aligned model version {new} (from {mid}, explanation {eid}).")
        print(alignment_lines(info))


def alignment_lines(info: dict) -> str:
    """What an align run did, from the aligned model's recorded info: masks, verdicts held back, the
    strength and why, and the reliance on the masked regions before and after."""
    from .core.strength import StrengthChoice

    stats = info.get("mask_stats", {})
    lines = [
        f"Masks: {stats.get('images_with_mask', 0)} images with a mask, from "
        f"{stats.get('spurious_segments', 0)} 'spurious' verdicts; {stats.get('expert_overrides', 0)} "
        f"verdicts are the expert's; {stats.get('undecided', 0)} segments are undecided."
    ]
    held = stats.get("held_back_segments") or []
    if held:
        shown = ", ".join(f"{a}/{b + 1}" for a, b in held[:20]) + (" ..." if len(held) > 20 else "")
        lines.append(
            f"Held back by the consistency check ({len(held)}; image/segment): {shown}. They look like segments "
            "judged relevant elsewhere; confirm any with `lvlmva verdict PROJ --sample N --segment S --set "
            "spurious`."
        )
    else:
        lines.append("Held back by the consistency check: none.")
    if stats.get("kept_low_reliance"):
        lines.append(
            f"Kept although they look unlike the others: {stats['kept_low_reliance']} segments the model hardly "
            "relies on (masking them costs nothing)."
        )
    if "strength" in info:
        c = StrengthChoice(**info["strength"])
        lines.append(f"Penalty: {c.summary()}")
        for r in c.rounds:
            rel = "n/a" if r["reliance"] is None else f"{r['reliance']:.3f}"
            lines.append(
                f"  strength {r['strength']:g}, {r['epochs']} epochs: reliance {rel}"
                + ("" if r["kept"] else " (not lower: undone)")
            )
    hist = info.get("history") or []
    if hist:
        last = hist[-1]
        lines.append(
            f"Last epoch: loss {last['loss']:.4f}, cross-entropy {last['ce']:.4f}, penalty {last['penalty']:.4g}, "
            f"training accuracy {last['train_accuracy']:.3f}."
        )
    return "\n".join(lines)


def cmd_evaluate(args):
    from .core.pipeline import evaluate_models

    s = _pipeline_settings(args)
    with _open(args) as p:
        ids = args.models
        if not ids:
            latest = p.latest_model()
            if latest is None:
                raise ValueError("This project has no model yet; train one first.")
            original = p.original_of(latest)
            ids = [original, latest] if original != latest else [latest]
            print(
                f"Evaluating model {latest}"
                + (
                    f" against the original it was derived from (model {original})"
                    if original != latest
                    else ""
                )
                + "; --models ID ... chooses others."
            )
        with _Bar(args.quiet) as state:
            evs = evaluate_models(p, ids, s.evaluate, _device(args), state, store=not args.no_store)
        if args.no_store:
            print("(not stored: --no-store)")
        out = {str(k): v.to_dict() for k, v in evs.items()}
        for mid, ev in evs.items():
            wga = (
                "n/a"
                if ev.worst_group_accuracy is None
                else f"{ev.worst_group_accuracy:.3f} ({ev.worst_group})"
            )
            al = "n/a" if ev.alignment is None else f"{ev.alignment:.3f}"
            print(f"model {mid}: accuracy {ev.accuracy:.3f}, worst-group accuracy {wga}, alignment {al}")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")


def cmd_qualify(args):
    """The qualification table on the project's own data (core/qualify.py)."""
    from .core.qualify import qualify, table

    s = _pipeline_settings(args)
    with _open(args) as p:
        with _Bar(args.quiet) as state:
            res = qualify(
                p,
                s,
                _device(args),
                state,
                model_id=args.model,
                critic_seed=args.seed if args.seed is not None else 0,
            )
        print(
            f"Qualification on {res['n_train']} training / {res['n_test']} test images; original model: "
            f"{res['origin']}; alignment set of {res['n_align']} images."
        )
        print(table(res))


def cmd_run(args):
    from .core.pipeline import run_pipeline

    s = _pipeline_settings(args)
    with _open(args) as p:
        critic = _make_critic(args, p, None)
        with _Bar(args.quiet) as state:
            res = run_pipeline(p, s, critic, _device(args), state, model_id=args.model)
        print(_results_table(p, res))
        print(f"Results: {res['results_file']}  ({res['total_s']:.0f} s)")


def cmd_status(args):
    from .cli_recovery import interrupted_lines
    from .core.lock import ProjectLocked
    from .core.project import Project

    try:
        p = _open(args)
    except ProjectLocked as e:  # looking needs no lock: say who writes, and show what is there
        print(f"note: {e} Showing it read-only.")
        p = Project.open(args.project, read_only=True, reason="held")
        tell_notes(p)
    with p:
        m = p.manifest
        print(
            f"Project '{m['name']}' at {p.root}: classes {', '.join(p.classes)}; images "
            f"{m['image_size'][0]}x{m['image_size'][1]}x{m['channels']}"
        )
        for split in ("train", "val", "test"):
            n = len(p.samples(split))
            if n:
                print(f"  {split}: {n} images")
        for r in p.models():
            print(f"  model {r['id']}: {r['name']} [{r['kind']}] sha256 {r['sha256'][:12]}")
        for r in p.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 10"):
            print(f"  run {r['id']}: {r['kind']} {r['status']}" + (f" ({r['error']})" if r["error"] else ""))
        for line in interrupted_lines(p):
            print(line)


def run_demo(folder: Path | None = None, device: str = "auto", quiet: bool = False) -> dict:
    """Create (or reuse) the demo project and run steps 1-9 with the simulated critic (no LVLM ships)."""
    from .core.critic import critic_from_identity, critic_spec
    from .core.demo import create_demo_project, default_demo_folder
    from .core.devices import resolve_device
    from .core.pipeline import PipelineSettings, run_pipeline
    from .core.project import Project

    folder = folder or default_demo_folder()
    if (folder / "project.json").exists():
        project = Project.open(folder)
        print(f"Opening the demo project in {folder}")
    else:
        print(f"Building the demo project in {folder} (generated ISIC-like lesions with coloured patches)")
        project = Project.open(create_demo_project(folder))
    with project:
        critic = critic_from_identity(critic_spec("simulated", verdict_accuracy=0.87, seed=0))
        print(
            f"Critic: {critic.name}. With LVLM weights in a folder, critique this project with "
            f"`lvlmva critique {project.root} --critic lvlm --model-dir FOLDER` (docs/lvlm.md)."
        )
        with _Bar(quiet) as state:
            res = run_pipeline(project, PipelineSettings(), critic, resolve_device(device), state)
        print(_results_table(project, res))
        print(f"Results: {res['results_file']}  ({res['total_s']:.0f} s)")
        return res


def cmd_demo(args):
    run_demo(Path(args.folder) if args.folder else None, device=args.device, quiet=args.quiet)


def cmd_settings(args):
    from .core.settings_schema import SETTINGS

    if args.list:
        for st in SETTINGS:
            unit = f" [{st.unit}]" if st.unit else ""
            print(f"{st.name} ({st.type.__name__}{unit}; default {st.text(st.default)}; {st.bounds_text()})")
            print(f"    {st.help}")
        return
    print(json.dumps(_pipeline_settings(args, tell=sys.stderr).to_dict(), indent=2, ensure_ascii=False))


def build_parser() -> argparse.ArgumentParser:
    from .cli_audit import register as register_audit
    from .cli_lvlm import add_lvlm_args
    from .cli_lvlm import register as register_lvlm
    from .cli_recovery import register as register_recovery
    from .cli_report import register as register_report
    from .cli_spotcheck import register as register_spot_check

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
                type=_arch,
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
    _preprocess_args(sp)

    sp = add("import-model", cmd_import_model, "step 1: register an existing model's weights")
    sp.add_argument("weights", help="the trained classifier's state dict (safetensors, or .pth of tensors)")
    sp.add_argument(
        "--arch",
        required=True,
        type=_arch,
        help="mlp, small_cnn, or any torchvision classifier: resnet18/34/50, densenet121, efficientnet_b0, "
        "convnext_tiny, mobilenet_v3_large, vit_b_16, swin_t, ...",
    )
    _preprocess_args(sp)

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
    from .core.offline import enforce_offline

    enforce_offline()  # again, in case the host changed the environment since the package import
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    import sqlite3

    from .core.jobs import Cancelled
    from .core.project import ProjectError

    try:
        rc = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here at the latest, not in the interpreter's exit
    except BrokenPipeError as e:
        if not _stdout_closed():  # some other pipe (not our output): an error like any other
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0  # output piped into e.g. `head`, which had read enough: nothing to tell
    except (ProjectError, ValueError, OSError, RuntimeError) as e:
        from .core.secrets import scrub

        print(f"error: {scrub(e)}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    except sqlite3.DatabaseError as e:  # damage found while reading, after the open's integrity check
        from .core.errors import describe_error

        print(f"error: {describe_error(e).message}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("cancelled; the project is consistent and the run is marked cancelled.", file=sys.stderr)
        return 130
    return rc if isinstance(rc, int) else 0  # a command may return its exit code (audit --verify)


if __name__ == "__main__":
    sys.exit(main())
