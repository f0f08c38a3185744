"""The audit report as PDF pages (fpdf2, pure Python, so the core stays Qt-free).

Same content as the HTML (report/document.py gathers it): a title page with the summary and the audit status,
a table of contents, then one section per part with bookmarks. Tables repeat their headings when they
break across pages (report/pdf_layout.py). Critic texts are trimmed in the PDF; the HTML keeps them whole.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from fpdf import FontFace
from fpdf.enums import XPos, YPos

from lvlmva_desktop.report.document import SECTIONS, pct, settings_text, signed_pct
from lvlmva_desktop.report.pdf_layout import ACCENT, BAD, INK, MUTED, OK, VERDICT_INK, WARN, ReportPDF

PDF_TEXT = 420  # characters of a critic text in the PDF


def _verdict(v: str, bold: bool = False) -> tuple[str, FontFace]:
    return v or "-", FontFace(color=VERDICT_INK.get(v, INK), emphasis="B" if bold else None)


def _toc(pdf: ReportPDF, outline: list) -> None:
    pdf.set_font(pdf.body, "B", 14)
    pdf.set_text_color(*ACCENT)
    pdf.cell(0, 10, "Contents", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(*INK)
    pdf.set_font(pdf.body, "", 10.5)
    for s in outline:
        pdf.cell(pdf.width - 15, 7, s.name, link=pdf.add_link(page=s.page_number))
        pdf.cell(15, 7, str(s.page_number), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


# -- the pages ---------------------------------------------------------------------------------------
def _title_page(pdf: ReportPDF, r: dict) -> None:
    pdf.add_page()
    p, m, a, au = r["project"], r["metrics"], r["alignment"], r["audit"]
    pdf.set_y(28)
    pdf.set_font(pdf.body, "B", 26)
    pdf.set_text_color(*ACCENT)
    pdf.cell(0, 13, "Audit report", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(*INK)
    pdf.set_font(pdf.body, "", 14)
    pdf.multi_cell(0, 7, pdf.t(p["name"]), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(pdf.body, "", 9)
    pdf.set_text_color(*MUTED)
    pdf.cell(
        0,
        6,
        pdf.t(
            f"Generated {r['generated']} by {r['generated_by']} with LVLM-VA Desktop {r['environment']['lvlmva_desktop']}"
        ),
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.set_text_color(*INK)
    pdf.ln(6)
    # the audit status first: it says whether the rest can be trusted
    if au["ok"] is False:
        pdf.boxed(f"Audit log: {au['status']}. " + " ".join(f"{x}." for x in au["problems"])
                  + (f" Head hash: {au['head']}" if au["head"] else ""), BAD, 10)  # fmt: skip
    elif not au["present"]:
        pdf.boxed("Audit log: no audit log. This project has no audit log table, so its history of changes "
                  "cannot be verified.", WARN, 10)  # fmt: skip
    else:
        pdf.boxed(
            f"Audit log: {au['status']}, {au['n_entries']} entries verified. Head hash: {au['head']}", OK, 10
        )
    splits = ", ".join(f"{k} {v}" for k, v in r["data"]["splits"].items())
    pairs: list[tuple[str, object]] = [
        ("Project folder", p["root"]),
        ("Data manifest hash", (r["data"]["hash"], FontFace(family=pdf.mono, size_pt=7.5))),
        ("Images", f"{r['data']['n_images']} ({splits})"),
        ("Classes", ", ".join(p["classes"])),
        ("Class descriptions", r["descriptions"]["summary"]),
        ("Critic", r["critic"]["name"] or "none"),
    ]
    if m:
        b = m["before"]
        pairs.append(("Model before", f"{b['name']} (version {b['model_id']}): accuracy {pct(b['accuracy'])}, "
                      f"worst-group accuracy {pct(b['worst_group_accuracy'])}"))  # fmt: skip
        if m["after"]:
            af = m["after"]
            pairs.append(("Model after", f"{af['name']} (version {af['model_id']}): accuracy "
                          f"{pct(af['accuracy'])}, worst-group accuracy {pct(af['worst_group_accuracy'])}"))  # fmt: skip
            d = m["deltas"]
            pairs.append(("Change", f"average accuracy {signed_pct(d.get('dAGA'))}, worst group "
                          f"{signed_pct(d.get('dWGA'))}"))  # fmt: skip
    if a:
        pairs.append(("Alignment set", f"{len(a['images'])} images, {a['n_segments']} segments: {a['spurious']} "
                      f"judged spurious, {a['by_expert']} decided by the expert"))  # fmt: skip
    pairs.append(("Device", r["environment"].get("device", "")))
    pdf.subheading("Summary")
    pdf.kv(pairs, key_width=26)
    if r["critic"]["kind"] == "simulated":
        pdf.boxed(r["critic"]["description"], WARN)
    pdf.ln(2)
    pdf.note("Sections: " + "; ".join(f"{i}. {s}" for i, s in enumerate(SECTIONS, 1)) + ".")


def _project(pdf: ReportPDF, r: dict) -> None:
    p, d = r["project"], r["data"]
    pdf.heading(1, SECTIONS[0])
    pdf.kv(
        [
            ("Name", p["name"]),
            ("Created", p["created"]),
            ("Classes", ", ".join(p["classes"])),
            ("Model input", f"{p['image_size']} pixels, {p['channels']} channel(s)"),
            ("Data manifest hash (sha256)", (d["hash"], FontFace(family=pdf.mono, size_pt=7.5))),
            ("Images per split", "; ".join(f"{k}: {v}" for k, v in d["splits"].items())),
            ("Images with an artefact mask", d["with_masks"]),
        ]
    )
    pdf.note("The data manifest hash covers every image's path, label, split, group, mask and content hash: "
             "any change to the data changes it.")  # fmt: skip
    if d["imports"]:
        pdf.subheading("Imports")
        rows = [["When", "Source", "Imported", "Skipped"]]
        rows += [[i["created"], i["source"], i["n"], i["skipped"]] for i in d["imports"]]
        pdf.table_of(rows, (20, 60, 10, 10), right_cols=(2, 3))


def _descriptions(pdf: ReportPDF, r: dict) -> None:
    pdf.heading(2, SECTIONS[1])
    hist = r["descriptions"]["history"]
    if not hist:
        pdf.para("No class description was saved.")
    used = sorted({v for h in hist for v in ([h["version"]] if h["critique_runs"] else [])})
    if hist and used and hist[-1]["version"] not in used:
        pdf.boxed(f"The critique used version {', '.join(map(str, used))}; the descriptions were changed since "
                  f"(now version {hist[-1]['version']}).", WARN)  # fmt: skip
    for h in reversed(hist):
        runs = h["critique_runs"]
        pdf.subheading(
            f"Version {h['version']}{' (current)' if h['current'] else ''}  ·  {h['created']}  ·  {h['author']}"
        )
        pdf.note(
            f"Used by critique run(s) {', '.join(map(str, runs))}."
            if runs
            else "Not used by a critique of this round."
        )
        pdf.kv(list(h["descriptions"].items()), key_width=22)


def _critic(pdf: ReportPDF, r: dict) -> None:
    c = r["critic"]
    pdf.heading(3, SECTIONS[2])
    pdf.para(c["name"] or "No critic", 10, style="B")
    if c["kind"] == "simulated":
        pdf.boxed(c["description"], WARN)
    else:
        pdf.para(c["description"])
    if c["pairs"]:
        pdf.kv(c["pairs"], key_width=30, mono_values=True)
    if c["runs"]:
        pdf.subheading("Critique runs on this explanation")
        rows = [["Run", "Status", "User", "Started", "Duration", "Descriptions", "Result"]]
        for u in c["runs"]:
            v = u["results"].get("verdicts") or {}
            rows.append([u["id"], u["status"], u["user"], u["started"], u["duration"],
                         f"version {u['settings'].get('class_descriptions_version')}",
                         f"{u['results'].get('n_images', 0)} images; " + ", ".join(f"{n} {k}" for k, n in v.items())])  # fmt: skip
        pdf.table_of(rows, (6, 10, 10, 18, 9, 12, 35), right_cols=(0,))
    _spot_check(pdf, r.get("spot_check"))
    pdf.subheading("Prompt templates of the project")
    rows = [["Template", "Version", "sha256 now", "Used by the critique"]]
    for t in c["templates"]:
        used = "not used" if t["same"] is None else ("same" if t["same"] else f"different: {t['used']}")
        rows.append([t["name"], t["version"] or "default", t["sha256"], used])
    pdf.table_of(rows, (18, 8, 55, 19), size=7.5, mono_cols=(2,), right_cols=(1,))


def _spot_check(pdf: ReportPDF, sc: dict | None) -> None:
    """The newest blind spot-check of the critic (core/method/spotcheck.py), as the HTML shows it."""
    pdf.subheading("Critic spot-check")
    if not sc:
        pdf.note(
            "The critic's verdicts were not spot-checked (Method > Check the critic…, or lvlmva spot-check)."
        )
        return
    pdf.para(
        f"Run {sc['run_id']}  ·  {sc['started']}  ·  by {sc['user']}  ·  explanation {sc['explanation_id']}  ·  "
        f"expert: {sc['expert']}"
    )
    if not sc["same_explanation"]:
        pdf.boxed(f"This spot-check was made on explanation {sc['explanation_id']}, not on the explanation this "
                  "report covers.", WARN)  # fmt: skip
    pop = ", ".join(f"{v} {k}" for k, v in sc["population"].items() if v)
    pdf.note(
        f"A random sample of the critic's verdicts, stratified by verdict (seed {sc['seed']}; {sc['n_drawn']} drawn "
        f"from {pop}), each segment shown to the expert without the critic's answer. The accuracy weights each "
        "verdict by its share of the critic's verdicts. An expert's \"undecided\" is not counted; the critic's "
        '"undecided" counts as wrong where the expert decided.'
    )
    if sc["accuracy"] is not None:
        acc = (f"{sc['accuracy']:.3f} (95% Wilson interval {sc['interval']}); the expert agreed with "
               f"{sc['n_agreed']} of {sc['n_counted']} verdicts decided")  # fmt: skip
    else:
        acc = "not measured: the expert decided none of the segments"
    answered = f"{sc['n_answered']} of {sc['n_drawn']}"
    if sc["n_expert_undecided"]:
        answered += f'; "undecided" on {sc["n_expert_undecided"]}'
    answered += f"; {sc['written']} written as the expert's verdicts"
    pdf.kv([("Verdict accuracy", acc), ("Answered", answered)], key_width=26)
    rows = [["The critic's verdict", "Verdicts", "Drawn", "Decided by the expert", "Agreed", "Accuracy",
             "95% Wilson interval"]]  # fmt: skip
    for row in sc["rows"]:
        a = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        rows.append([_verdict(row["verdict"]), row["population"], row["drawn"], row["counted"], row["agreed"], a,
                     row["interval"]])  # fmt: skip
    pdf.table_of(rows, (18, 11, 9, 17, 10, 12, 23), right_cols=(1, 2, 3, 4, 5))
    if sc["meaning"]:
        pdf.para("What it means: " + sc["meaning"])
    pdf.note(
        'The accuracy on the critic\'s "spurious" verdicts matters most: a false "spurious" verdict forbids real '
        "evidence, and in the benchmark such errors on 13% of the relevant segments undid the alignment, while "
        'missing artefacts cost little (docs/benchmarks.md, "Which verdict error hurts").'
    )
    if sc["proven"]:
        pdf.note(
            "Proven from the data: the figures above were recomputed from the stored sample and answers, whose "
            f"hashes match audit entry {sc['audit_entry']} (sample sha256 {sc['sample_sha256']}, answers sha256 "
            f"{sc['answers_sha256']})."
        )
    else:
        pdf.boxed("The stored sample or answers do not match the audit log, or the stored figures are not what they "
                  "give: do not rely on this spot-check.", BAD)  # fmt: skip


def _verdict_lines(im: dict) -> str:
    out = []
    for v in im["verdicts"]:
        ev = f" ({pct(v['evidence'])})" if v.get("evidence") is not None else ""
        if v["decided_by"] == "expert":
            out.append(
                f"{v['segment']}{ev}: {v['verdict_used']} by the expert (critic: {v['critic_verdict'] or '-'})"
            )
        else:
            out.append(f"{v['segment']}{ev}: {v['verdict_used']}")
    return "\n".join(out) or "no verdict"


def _critiques(pdf: ReportPDF, r: dict) -> None:
    a = r["alignment"]
    pdf.heading(4, SECTIONS[3])
    if not a:
        pdf.para("No explanation (alignment set with attributions) yet.")
        return
    pdf.para(
        f"Explanation {a['explanation_id']} of model version {a['model_id']} on alignment set {a['set_id']}: "
        f"{len(a['images'])} images, {a['n_segments']} segments; attributions by {a['method']}; "
        f"{a['spurious']} judged spurious, {a['undecided']} "
        f"undecided; {a['by_expert']} decided by the expert. Segments are numbered from 1, as the critic and the "
        "expert saw them; the verdict used is the expert's where given, else the critic's (judge's)."
    )
    pdf.subheading(f"Expert overrides ({len(a['overrides'])})")
    if a["overrides"]:
        rows = [["Image", "Segment", "Critic", "Expert", "By", "When"]]
        rows += [[o["sample_id"], o["segment"], _verdict(o["critic"]), _verdict(o["expert"], True), o["author"], o["time"]]
                 for o in a["overrides"]]  # fmt: skip
        pdf.table_of(rows, (10, 10, 15, 15, 20, 30), right_cols=(0, 1))
    else:
        pdf.note("The expert did not override any verdict.")
    pdf.subheading("Images of the alignment set")
    pdf.note(f"Thumbnails show the numbered segments the critic saw. Verdict per segment (share of the evidence). "
             f"Critic texts are cut at {PDF_TEXT} characters here; the HTML report has them whole.")  # fmt: skip
    rows = [["", "Image", "Verdicts", "Critic's text"]]
    for im in a["images"]:
        text = " ".join(im["text"].split())
        if len(text) > PDF_TEXT:
            text = text[:PDF_TEXT].rsplit(" ", 1)[0] + " …"
        head = f"#{im['rank']} · image {im['sample_id']}\n{im['class']}" + (
            f"\ngroup {im['group']}" if im["group"] else ""
        )
        if im["n_overrides"]:
            head += f"\n{im['n_overrides']} override(s)"
        rows.append([{"img": im["thumb"]}, head, _verdict_lines(im), text or "no critique"])
    pdf.table_of(rows, (13, 17, 30, 40), size=7.5)


def _training(pdf: ReportPDF, r: dict) -> None:
    pdf.heading(5, SECTIONS[4])
    names = {"train": "ERM training of the original model", "align": "RRR fine-tuning (alignment)",
             "import_model": "import of a trained classifier"}  # fmt: skip
    if not r["training"]:
        pdf.para("No model was trained or imported yet.")
    for t in r["training"]:
        pdf.subheading(f"Run {t['id']}: {names.get(t['kind'], t['kind'])}  ·  {t['status']}")
        bits = [t["started"], t["duration"], t["user"]]
        if t["results"].get("model_id"):
            bits.append(f"produced model version {t['results']['model_id']}")
        if t["seeds"]:
            bits.append(f"seeds: {t['seeds']}")
        if t["error"]:
            bits.append(t["error"])
        pdf.note("  ·  ".join(str(b) for b in bits if b))
        if t.get("strength"):
            pdf.para(f"Penalty: {t['strength']}")
        pairs = settings_text(t["settings"])
        half = (len(pairs) + 1) // 2
        rows = [[*pairs[i], *(pairs[i + half] if i + half < len(pairs) else ("", ""))] for i in range(half)]
        pdf.table_of(rows, (22, 28, 22, 28), size=7.5, heading=False)
    pdf.subheading("Model versions")
    rows = [["Version", "Name", "Kind", "Parent", "Run", "sha256 of the weights file"]]
    rows += [[m["id"], m["name"], m["kind"], m["parent_id"] or "", m["run_id"] or "", m["sha256"]]
             for m in r["models"]]  # fmt: skip
    pdf.table_of(rows, (9, 20, 7, 7, 5, 52), size=7.5, mono_cols=(5,), right_cols=(0, 3, 4))
    rows = [["Version", "Architecture and input (recorded with the version, used by every step)"]]
    rows += [[m["id"], m.get("input", "")] for m in r["models"]]
    pdf.table_of(rows, (9, 91), size=7.5, right_cols=(0,))
    pdf.subheading(f"Every recorded run ({len(r['runs'])})")
    rows = [["Run", "Step", "Status", "User", "Started", "Duration", "Seeds"]]
    rows += [
        [u["id"], u["kind"], u["status"], u["user"], u["started"], u["duration"], u["seeds"]]
        for u in r["runs"]
    ]
    pdf.table_of(rows, (6, 12, 11, 10, 19, 10, 32), right_cols=(0, 5))


def _metrics(pdf: ReportPDF, r: dict) -> None:
    m = r["metrics"]
    pdf.heading(6, SECTIONS[5])
    if not m:
        pdf.para("No model yet.")
        return
    if m["missing"]:
        pdf.boxed(f"Model version(s) {', '.join(map(str, m['missing']))} have no stored evaluation on the test split; "
                  "evaluate to fill the table.", WARN)  # fmt: skip
    b, a, d = m["before"], m["after"], m["deltas"]
    head = ["On the test split", f"Before (version {b['model_id']})"]
    if a:
        head += [f"After (version {a['model_id']})", "Change"]
    rows = [head]
    for label, key, dk in (("Average accuracy", "accuracy", "dAGA"), ("Worst-group accuracy", "worst_group_accuracy", "dWGA"),
                           ("Alignment (evidence outside the artefact)", "alignment", "dAlignment"),
                           ("Reliance on the masked regions (training images)", "reliance", "dReliance")):  # fmt: skip
        row = [label, pct(b.get(key))]
        if a:
            row += [pct(a.get(key)), signed_pct(d.get(dk))]
        rows.append(row)
    row = ["Worst group", b["worst_group"] or ""]
    rows.append(row + ([a["worst_group"] or "", ""] if a else []))
    rows.append(["Test images", b["n"]] + ([a["n"], ""] if a else []))
    pdf.table_of(rows, (40, 22, 22, 16) if a else (40, 22), right_cols=(1, 2, 3))
    if not m["same_run"]:
        pdf.note("The two models were evaluated in different runs.")
    pdf.subheading("Accuracy per group")
    rows = [["Class", "Group", "Images", "Before"] + (["After", "Change"] if a else [])]
    for g in m["groups"]:
        rows.append([g["label"], g["group"] or "-", g["n"], pct(g["before"])]
                    + ([pct(g["after"]), signed_pct(g["change"])] if a else []))  # fmt: skip
    pdf.table_of(rows, (22, 22, 12, 14, 14, 16) if a else (22, 22, 12, 14), right_cols=(2, 3, 4, 5))
    q = r.get("qualification")
    if q:
        pdf.subheading(f"Qualification on this data (run {q['run_id']}, {q['started']})")
        pdf.note(
            "lvlmva qualify: the method run on this project's images with its artefact masks and groups, against "
            "its own upper bound (RRR with the true masks), with simulated critics of known verdict accuracy "
            f"instead of an LVLM. Original model: {q['origin']}."
        )
        rows = [["Method", "Accuracy", "Worst-group acc.", "Reliance on the artefact", "Strength"]]
        for row in q["rows"]:
            strength = "" if row.get("strength") is None else f"{row['strength']:g}"
            rows.append(
                [row["method"], pct(row["accuracy"]), pct(row["wga"]), pct(row.get("reliance")), strength]
            )
        pdf.table_of(rows, (34, 16, 18, 22, 10), right_cols=(1, 2, 3, 4))
        pdf.para(q["headline"])


def _heatmaps(pdf: ReportPDF, r: dict) -> None:
    hm = r["heatmaps"]
    pdf.heading(7, SECTIONS[6], keep=115)  # the introduction and the first row of pictures
    if not hm["items"]:
        pdf.para(hm["note"] or "No heatmap.")
        return
    pdf.para(
        f"Attributions (the explanation's method, section 4) toward the true class of model version {hm['before']} ({hm['before_name']}) and "
        f"of the aligned version {hm['after']} ({hm['after_name']}), with the explanation's settings, for the images "
        "with an expert override and those whose evidence moved most out of the segments judged spurious (outlined "
        "in amber). Each map is scaled to its own 99th percentile of |attribution|."
    )
    y = pdf.get_y()
    pdf.set_font(pdf.body, "", 8)
    pdf.set_text_color(*MUTED)
    pdf.cell(22, 5, "negative")
    pdf.image(io.BytesIO(hm["colour_bar"]), x=pdf.l_margin + 22, y=y + 0.8, w=60, h=3.5)
    pdf.set_x(pdf.l_margin + 85)
    pdf.cell(40, 5, "positive evidence", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(*INK)
    pdf.ln(3)
    side, gap = 40.0, 4.0
    block = 2 * side + gap
    for n, h in enumerate(hm["items"]):
        col = n % 2
        if col == 0:
            if pdf.get_y() + side + 16 > pdf.page_break_trigger:
                pdf.add_page()
            y = pdf.get_y()
        x = pdf.l_margin + col * (block + 8)
        for k, (png, share, label) in enumerate(
            ((h["before_png"], h["before_share"], "before"), (h["after_png"], h["after_share"], "after"))
        ):
            pdf.image(io.BytesIO(png), x=x + k * (side + gap), y=y, w=side, h=side)
            pdf.set_xy(x + k * (side + gap), y + side + 0.5)
            pdf.set_font(pdf.body, "", 7.5)
            pdf.set_text_color(*MUTED)
            pdf.cell(
                side,
                4,
                pdf.t(label + (f": {pct(share)} in spurious" if share is not None else "")),
                align="C",
            )
        pdf.set_xy(x, y + side + 4.5)
        pdf.set_text_color(*INK)
        pdf.set_font(pdf.body, "B", 8)
        pdf.cell(block, 4.5, pdf.t(f"Image {h['sample_id']} · {h['class']} · {h['why']}"), align="C")
        if col == 1 or n == len(hm["items"]) - 1:
            pdf.set_xy(pdf.l_margin, y + side + 12)


def _environment(pdf: ReportPDF, r: dict) -> None:
    pdf.heading(8, SECTIONS[7])
    pdf.kv(list(r["environment"].items()), key_width=25)
    pdf.note("The environment that made this report; the device of each training run is in its settings.")


def _audit(pdf: ReportPDF, r: dict) -> None:
    au = r["audit"]
    pdf.heading(9, SECTIONS[8])
    if not au["present"]:
        if au["ok"] is False:
            pdf.boxed(f"Status: {au['status']}", BAD, 10)
        else:
            pdf.boxed("No audit log: this project has no audit log table, so its history of changes cannot be "
                      "verified.", WARN)  # fmt: skip
        for problem in au["problems"]:
            pdf.para(f"• {problem}", 9, BAD)
        return
    pdf.boxed(f"Status: {au['status']}", OK if au["ok"] else BAD, 10)
    pairs: list[tuple[str, object]] = [
        ("Entries", au["n_entries"]),
        ("Head hash (newest entry)", (au["head"], FontFace(family=pdf.mono, size_pt=7.5))),
    ]
    if au.get("anchor"):
        pairs.append(("Newest entry in the manifest", au["anchor"].get("id")))
        pairs.append(
            ("Its hash in the manifest", (au["anchor"].get("hash"), FontFace(family=pdf.mono, size_pt=7.5)))
        )
    pdf.kv(pairs, key_width=28)
    if au["problems"]:
        pdf.para("Problems found (signs of tampering):", 9, BAD, "B")
    for problem in au["problems"]:
        pdf.para(f"• {problem}", 9, BAD)
    for warning in au.get("warnings", []):
        pdf.para(f"Warning: {warning}", 9, WARN)
    content = r.get("content")
    if content:
        pdf.subheading("Content verified against the log")
        pdf.note(
            "Before this report was written, every table row and file it shows was recomputed from the project "
            f"and compared with what the audit log recorded when it was written ({content['seconds']:.1f} s). "
            "A report is written only from verified content."
        )
        rows = [["Content", "Verified", "Notes"]]
        rows += [[c["what"], c["checked"], "; ".join(c["notes"])] for c in content["checks"]]
        pdf.table_of(rows, (30, 10, 60), right_cols=(1,))
    pdf.note("Keep the head hash outside the project (print, sign or send this report): a later verification "
             "that ends on a different hash shows that the log was rewritten.")  # fmt: skip
    if au.get("recent"):
        pdf.subheading("Newest entries")
        rows = [["Entry", "When", "User", "Action"]] + [
            [e["id"], e["time"], e["user"], e["action"]] for e in au["recent"]
        ]
        pdf.table_of(rows, (10, 25, 20, 45), right_cols=(0,))


def write_pdf(report: dict, path: str | Path, unicode_fonts: bool | None = None) -> Path:
    """Lay the gathered report out as PDF pages at ``path`` (written to a temporary name, then renamed)."""
    path = Path(path)
    pdf = ReportPDF(report["project"]["name"], report["generated"], unicode_fonts)
    _title_page(pdf, report)
    pdf.add_page()
    pdf.insert_toc_placeholder(_toc, pages=1)
    for part in (
        _project,
        _descriptions,
        _critic,
        _critiques,
        _training,
        _metrics,
        _heatmaps,
        _environment,
        _audit,
    ):
        part(pdf, report)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pdf.output(str(tmp))
    os.replace(tmp, path)
    return path
