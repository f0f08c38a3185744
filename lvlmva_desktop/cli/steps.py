"""The method's steps as commands (generate, import, describe, train, sample, explain, critique, verdict,
show, align, evaluate, qualify, run, status, demo, settings)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lvlmva_desktop.cli.common import (
    Bar,
    device_of,
    latest,
    open_project,
    parse_value,
    pipeline_settings,
    tell_notes,
)
from lvlmva_desktop.cli.critic_args import make_critic


# -- commands -------------------------------------------------------------------------------------
def cmd_generate(args):
    from lvlmva_desktop.core.data.benchsets import GENERATORS

    with Bar(args.quiet) as state:
        params = {k: parse_value(v) for k, v in (p.split("=", 1) for p in args.param or [])}
        path = GENERATORS[args.name](args.out, seed=args.seed, state=state, **params)
    print(f"Wrote {args.name} (seed {args.seed}): {path}")


def cmd_import(args):
    from lvlmva_desktop.core.data.importing import import_class_folders, import_csv_manifest
    from lvlmva_desktop.core.store.project import Project

    root = Path(args.project)
    existing = (root / "project.json").exists()
    classes = None
    if existing:
        with Project.open(root) as p:
            classes = p.classes
    with Bar(args.quiet) as state:
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
    from lvlmva_desktop.core.data.images import read_image

    return read_image(path).shape[2] == 1


def cmd_describe(args):
    with open_project(args) as p:
        _, current = p.class_descriptions()
        desc = dict(current)
        if args.defaults:
            from lvlmva_desktop.core.data.benchsets import default_class_descriptions

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


def architecture_arg(name: str) -> str:
    from lvlmva_desktop.core.method.architectures import check_architecture

    try:
        return check_architecture(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_preprocess_args(sp: argparse.ArgumentParser) -> None:
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
    from lvlmva_desktop.core.method.pipeline import describe_preprocessing

    _, spec = p.load_model(mid)
    return describe_preprocessing(spec)


def cmd_train(args):
    from lvlmva_desktop.core.method.pipeline import train_original

    s = pipeline_settings(args)
    with open_project(args) as p:
        with Bar(args.quiet) as state:
            mid = train_original(
                p, s.arch, s.train, device_of(args), state, weights=args.weights, preprocess=_preprocess(args)
            )
        print(f"Trained model version {mid} ({s.arch}); preprocessing: {_describe_model(p, mid)}.")


def cmd_import_model(args):
    from lvlmva_desktop.core.method.pipeline import import_model

    with open_project(args) as p:
        mid = import_model(p, args.weights, args.arch, _preprocess(args))
        print(f"Imported model version {mid} ({args.arch}) from {args.weights}.")
        print(f"Preprocessing: {_describe_model(p, mid)} (set it with --input-size, --mean, --std).")


def cmd_sample(args):
    from lvlmva_desktop.core.method.pipeline import sample_alignment_set

    s = pipeline_settings(args)
    with open_project(args) as p:
        mid = latest(p, "models", args.model, "model")
        with Bar(args.quiet) as state:
            sid = sample_alignment_set(p, mid, s.sampling, device_of(args), state)
        res = json.loads(p.alignment_set_run(sid)["results"])
        print(
            f"Alignment set {sid}: {res['n']} images ({s.sampling.strategy}) from model {mid}; "
            f"{res['artefact_share']:.0%} carry a known artefact."
        )


def cmd_explain(args):
    from lvlmva_desktop.core.method.pipeline import explain_alignment_set

    s = pipeline_settings(args)
    with open_project(args) as p:
        set_id = latest(p, "alignment_sets", args.set_id, "alignment set")
        mid = args.model or p.alignment_set_model(set_id)
        with Bar(args.quiet) as state:
            eid = explain_alignment_set(p, mid, set_id, s.explain, s.segment, device_of(args), state)
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
    from lvlmva_desktop.core.method.pipeline import run_critique

    with open_project(args) as p:
        eid = latest(p, "explanations", args.explanation, "explanation")
        critic = make_critic(args, p, eid)
        with Bar(args.quiet) as state:
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
    from lvlmva_desktop.core.method.pipeline import results_table

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
    with open_project(args) as p:
        eid = latest(p, "explanations", args.explanation, "explanation")
        if args.set:
            if args.sample is None or args.segment is None:
                raise ValueError("--set needs --sample and --segment (segments are numbered from 1).")
            p.set_expert_verdict(eid, args.sample, args.segment - 1, args.set)
            print(f"Expert verdict stored: sample {args.sample}, segment {args.segment} -> {args.set}.")
        eff = p.effective_verdicts(eid)
        given = argparse.Namespace(project=args.project, settings=args.settings)  # --set is the verdict here
        held = _held_back(p, eid, pipeline_settings(given, tell=None).align)
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
    from lvlmva_desktop.core.method.pipeline import alignment_masks

    _, _, stats = alignment_masks(project, expl_id, settings)
    return {(int(a), int(b)) for a, b in stats["held_back_segments"]}


def cmd_show(args):
    """What the critic said about one image, and the verdict per segment with who decided it."""
    with open_project(args) as p:
        eid = latest(p, "explanations", args.explanation, "explanation")
        _, t = p.explanation(eid)
        ids = t["sample_ids"].tolist()
        if args.sample not in ids:
            raise ValueError(
                f"Image {args.sample} is not in the alignment set of explanation {eid}; "
                f"its images are {', '.join(map(str, ids[:12]))}{' ...' if len(ids) > 12 else ''}."
            )
        k = ids.index(args.sample)
        row = p.sample_row(args.sample)
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
        held = _held_back(p, eid, pipeline_settings(args, tell=None).align)
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
    from lvlmva_desktop.core.method.pipeline import align_model

    s = pipeline_settings(args)
    with open_project(args) as p:
        eid = latest(p, "explanations", args.explanation, "explanation")
        mid = args.model or p.explanation_model(eid)
        with Bar(args.quiet) as state:
            new = align_model(p, mid, eid, s.align, device_of(args), state)
        info = json.loads(p.model_row(new)["info"] or "{}")
        print(f"Aligned model version {new} (from {mid}, explanation {eid}).")
        print(alignment_lines(info))


def alignment_lines(info: dict) -> str:
    """What an align run did, from the aligned model's recorded info: masks, verdicts held back, the
    strength and why, and the reliance on the masked regions before and after."""
    from lvlmva_desktop.core.method.strength import StrengthChoice

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
    from lvlmva_desktop.core.method.pipeline import evaluate_models

    s = pipeline_settings(args)
    with open_project(args) as p:
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
        with Bar(args.quiet) as state:
            evs = evaluate_models(p, ids, s.evaluate, device_of(args), state, store=not args.no_store)
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
    """The qualification table on the project's own data (core/method/qualify.py)."""
    from lvlmva_desktop.core.method.qualify import qualify, table

    s = pipeline_settings(args)
    with open_project(args) as p:
        with Bar(args.quiet) as state:
            res = qualify(
                p,
                s,
                device_of(args),
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
    from lvlmva_desktop.core.method.pipeline import run_pipeline

    s = pipeline_settings(args)
    with open_project(args) as p:
        critic = make_critic(args, p, None)
        with Bar(args.quiet) as state:
            res = run_pipeline(p, s, critic, device_of(args), state, model_id=args.model)
        print(_results_table(p, res))
        print(f"Results: {res['results_file']}  ({res['total_s']:.0f} s)")


def cmd_status(args):
    from lvlmva_desktop.cli.recovery import interrupted_lines
    from lvlmva_desktop.core.store.lock import ProjectLocked
    from lvlmva_desktop.core.store.project import Project

    try:
        p = open_project(args)
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
        for r in p.recent_runs(10):
            print(f"  run {r['id']}: {r['kind']} {r['status']}" + (f" ({r['error']})" if r["error"] else ""))
        for line in interrupted_lines(p):
            print(line)


def run_demo(folder: Path | None = None, device: str = "auto", quiet: bool = False) -> dict:
    """Create (or reuse) the demo project and run steps 1-9 with the simulated critic (no LVLM ships)."""
    from lvlmva_desktop.core.data.demo import create_demo_project, default_demo_folder
    from lvlmva_desktop.core.method.critic import critic_from_identity, critic_spec
    from lvlmva_desktop.core.method.pipeline import PipelineSettings, run_pipeline
    from lvlmva_desktop.core.runtime.devices import resolve_device
    from lvlmva_desktop.core.store.project import Project

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
        with Bar(quiet) as state:
            res = run_pipeline(project, PipelineSettings(), critic, resolve_device(device), state)
        print(_results_table(project, res))
        print(f"Results: {res['results_file']}  ({res['total_s']:.0f} s)")
        return res


def cmd_demo(args):
    run_demo(Path(args.folder) if args.folder else None, device=args.device, quiet=args.quiet)


def cmd_settings(args):
    from lvlmva_desktop.core.method.settings_schema import SETTINGS

    if args.list:
        for st in SETTINGS:
            unit = f" [{st.unit}]" if st.unit else ""
            print(f"{st.name} ({st.type.__name__}{unit}; default {st.text(st.default)}; {st.bounds_text()})")
            print(f"    {st.help}")
        return
    print(json.dumps(pipeline_settings(args, tell=sys.stderr).to_dict(), indent=2, ensure_ascii=False))
