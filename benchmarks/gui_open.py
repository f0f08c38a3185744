"""Benchmark the dataset browser on a large project: open, first thumbnails painted, filter, sort.

Builds (once, cached under bench_out/) a project of N small PNG images (default 50,000 of 32x32, two
classes, a "patch" group), imported through the same CSV import and Project calls as the demo. Then, in a
fresh process with an offscreen window, it measures:

* Project.open, and the browser's construction (one-query sample table, model, filters);
* the time from opening the project (the program already running), from showing the pane, and from the
  process start (Python, PySide6 and torch imports included) until the first screen of thumbnails is
  decoded and painted;
* a filter change, a sort by confidence and by entropy (on synthetic probabilities: a sort's cost does not
  depend on where the probabilities come from), and a jump to the middle of the grid until its thumbnails
  are painted.

The issue requires the first thumbnails in under 2 seconds at 50,000 images.

    python benchmarks/gui_open.py                   # 50,000 images in bench_out/gui-open-50000
    python benchmarks/gui_open.py --n 5000 --folder /tmp/browse-bench
    python benchmarks/gui_open.py --predictions     # also time model_predictions (first run and cached)

--predictions stores an untrained small_cnn in the project (once); later runs then also show the
browser's own predictions job (it starts after the first screen of thumbnails) and use its predictions.
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()  # before the heavy imports: "from starting" includes them

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- building the project (once) ---------------------------------------------------------------------------
def build_project(folder: Path, n: int, size: int) -> Path:
    """Generate n images and import them; reuse a finished project from an earlier run."""
    import numpy as np
    from PIL import Image

    from lvlmva_desktop.core.data.importing import import_csv_manifest
    from lvlmva_desktop.core.store.project import Project

    proj = folder / "proj"
    if (proj / "project.json").exists():
        print(f"reusing the project in {proj}")
        return proj
    data = folder / "data"
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    rows = ["path,label,group,split"]
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        label = i % 2
        patch = rng.random() < (0.8 if label == 0 else 0.2)
        img = np.empty((size, size, 3), np.uint8)
        img[:] = rng.integers(150, 230, 3)
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        r = size * (0.18 if label == 0 else 0.28) * (0.8 + 0.4 * rng.random())
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(40, 110, 3)
        if patch:
            py, px = rng.integers(0, size - 5, 2)
            img[py : py + 5, px : px + 5] = (30, 90, 220)
        sub = data / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / f"{i:06d}.png")
        split = "test" if i % 5 == 0 else "train"
        rows.append(
            f"{sub.name}/{i:06d}.png,{'benign' if label == 0 else 'malignant'},"
            f"{'patch' if patch else 'no_patch'},{split}"
        )
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    print(f"generated {n:,} images in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    report = import_csv_manifest(data / "manifest.csv")
    print(
        f"imported (every image decoded and hashed) in {time.perf_counter() - t:.1f} s; "
        f"{len(report.skipped)} skipped"
    )
    t = time.perf_counter()
    tmp = folder / "proj.tmp"
    with Project.create(tmp, f"browser benchmark, {n} images", report.classes, (size, size), 3) as p:
        p.add_samples(report)
    os.replace(tmp, proj)
    print(f"project written in {time.perf_counter() - t:.1f} s")
    return proj


# -- measuring (in a fresh process) --------------------------------------------------------------------------
def measure(proj: Path, predictions: bool) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    import numpy as np

    from lvlmva_desktop.core.store.project import Project
    from lvlmva_desktop.gui.browser import BrowserPane
    from lvlmva_desktop.gui.jobs import JobRunner
    from lvlmva_desktop.gui.session import Session

    out: dict = {"imports_and_app_s": time.perf_counter() - T_PROCESS}
    t = time.perf_counter()
    Project.open(proj).close()
    out["project_open_s"] = time.perf_counter() - t

    session = Session(device="cpu")
    runner = JobRunner(lambda: session.root)
    t_open = time.perf_counter()
    session.open_project(proj)
    pane = BrowserPane(session, runner)
    out["browser_build_s"] = time.perf_counter() - t_open
    out["images"] = len(pane.model.table)

    pane.resize(1000, 900)
    t_show = time.perf_counter()
    pane.show()
    view = pane.view

    def wait_painted(deadline_s: float = 60.0) -> float:
        """Process events until every visible cell has its thumbnail and a paint drew them."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < deadline_s:
            app.processEvents()
            rows = view.visible_rows()
            if rows and all(pane.cache.has(pane.model.sample_id(r)) for r in rows):
                before = view.delegate.painted_thumbnails
                while view.delegate.painted_thumbnails < before + len(rows):
                    app.processEvents()  # the cache's batched repaint arrives within ~25 ms
                    time.sleep(0.001)
                return time.perf_counter()
            time.sleep(0.001)
        raise TimeoutError("thumbnails did not appear")

    done = wait_painted()
    out["first_thumbnails_after_show_s"] = done - t_show
    out["first_thumbnails_from_open_s"] = done - t_open
    out["first_thumbnails_from_start_s"] = done - T_PROCESS
    out["visible_cells"] = len(view.visible_rows())
    out["thumbnails_decoded"] = pane.cache.requests

    def timed(action) -> float:
        t0 = time.perf_counter()
        action()
        app.processEvents()
        view.viewport().repaint()
        return time.perf_counter() - t0

    if session.latest_model_id() is not None:  # the project has a model: its predictions come from the job
        out["model"] = "the stored model's, from the browser's predictions job"
        while pane.model.probs is None and runner.is_busy("view"):
            app.processEvents()
            time.sleep(0.005)
        out["predictions_shown_after_open_s"] = time.perf_counter() - t_open
    if pane.model.probs is None:
        out["model"] = "none: synthetic probabilities, timing only"
        rng = np.random.default_rng(0)
        probs = rng.dirichlet(np.ones(len(session.project.classes)), len(pane.model.table))
        pane._pred_model = -1
        out["set_predictions_s"] = timed(
            lambda: (pane.model.set_predictions(probs.astype(np.float32)), pane._update_enabled())
        )
    out["filter_class_s"] = timed(lambda: pane.class_combo.setCurrentIndex(2))
    out["shown_after_filter"] = pane.model.rowCount()
    out["filter_group_s"] = timed(lambda: pane.group_combo.setCurrentIndex(1))
    out["reset_filters_s"] = timed(pane.reset_filters)

    out["sort_confidence_s"] = timed(lambda: pane.sort_combo.setCurrentIndex(2))
    out["sort_entropy_desc_s"] = timed(
        lambda: (pane.sort_combo.setCurrentIndex(1), pane.order_button.setChecked(True))
    )
    out["filter_wrong_s"] = timed(lambda: pane.correct_combo.setCurrentIndex(2))
    pane.reset_filters()
    pane.sort_combo.setCurrentIndex(0)
    app.processEvents()

    t = time.perf_counter()
    view.scrollTo(pane.model.index(pane.model.rowCount() // 2))
    out["jump_to_middle_thumbnails_s"] = wait_painted() - t
    bar = view.verticalScrollBar()
    frames = []
    for _ in range(60):  # a fast scroll: one page per frame, placeholders until the thumbnails come
        t = time.perf_counter()
        bar.setValue(bar.value() + bar.pageStep())
        view.viewport().repaint()
        app.processEvents()
        frames.append(time.perf_counter() - t)
    out["scroll_frame_mean_s"] = sum(frames) / len(frames)
    out["scroll_frame_max_s"] = max(frames)
    t = time.perf_counter()
    session.select_sample(int(pane.model.table.ids[-1]))
    app.processEvents()
    out["follow_last_sample_s"] = time.perf_counter() - t

    if predictions:
        out.update(time_predictions(session))
    runner.shutdown()
    pane.cache.shutdown()
    import resource

    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def time_predictions(session) -> dict:
    """model_predictions on an untrained small_cnn: the first run (decode + predict), then the cache."""
    import torch

    from lvlmva_desktop.core.method.models import ModelSpec, build_model
    from lvlmva_desktop.core.views.browse import model_predictions

    p = session.project
    spec = ModelSpec("small_cnn", len(p.classes), p.channels, p.image_size)
    row = p.db.execute("SELECT id FROM models WHERE name='benchmark'").fetchone()
    mid = row[0] if row else p.save_model(build_model(spec), spec, "benchmark", "imported", None, None)
    cpu = torch.device("cpu")
    t = time.perf_counter()
    model_predictions(p, mid, cpu)
    first = time.perf_counter() - t
    t = time.perf_counter()
    model_predictions(p, mid, cpu)
    return {"predictions_first_s": first, "predictions_cached_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000, help="number of images (default 50,000)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--folder", help="where the project is built (default bench_out/gui-open-N)")
    ap.add_argument("--predictions", action="store_true", help="also time model_predictions")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # the fresh process: a project folder
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.predictions)))
        return
    folder = Path(args.folder) if args.folder else ROOT / "bench_out" / f"gui-open-{args.n}"
    proj = build_project(folder, args.n, args.size)
    cmd = [sys.executable, __file__, "--measure", str(proj)] + (["--predictions"] if args.predictions else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"the measuring process failed:\n{res.stderr[-4000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(
        f"\n{r['images']:,} images, offscreen window 1000x900, {r['visible_cells']} cells visible; "
        f"predictions: {r['model']}"
    )
    rows = [
        ("python imports + QApplication", "imports_and_app_s"),
        ("Project.open", "project_open_s"),
        ("open in the session + build the browser", "browser_build_s"),
        ("first thumbnails painted, after show()", "first_thumbnails_after_show_s"),
        ("first thumbnails painted, from opening the project", "first_thumbnails_from_open_s"),
        ("first thumbnails painted, from process start", "first_thumbnails_from_start_s"),
        ("filter by class", "filter_class_s"),
        ("filter by group (on top)", "filter_group_s"),
        ("reset filters", "reset_filters_s"),
        ("predictions arrive (set + refilter)", "set_predictions_s"),
        ("cached predictions shown, from opening the project", "predictions_shown_after_open_s"),
        ("sort by confidence", "sort_confidence_s"),
        ("sort by entropy, descending", "sort_entropy_desc_s"),
        ("filter wrong predictions", "filter_wrong_s"),
        ("jump to the middle until painted", "jump_to_middle_thumbnails_s"),
        ("fast scroll, one page per frame: mean frame", "scroll_frame_mean_s"),
        ("fast scroll, one page per frame: slowest frame", "scroll_frame_max_s"),
        ("follow a selection from another pane", "follow_last_sample_s"),
        ("model_predictions, first run", "predictions_first_s"),
        ("model_predictions, cached", "predictions_cached_s"),
    ]
    for text, key in rows:
        if key in r:
            print(f"  {text:52s} {r[key] * 1000:9.0f} ms")
    print(
        f"  thumbnails decoded for the first screen: {r['thumbnails_decoded']}; "
        f"peak memory {r['max_rss_mb']:.0f} MB"
    )
    for what, key in (
        ("opening the project", "first_thumbnails_from_open_s"),
        ("the process start", "first_thumbnails_from_start_s"),
    ):
        verdict = "within" if r[key] < 2.0 else "NOT within"
        print(f"first thumbnails from {what}: {verdict} 2 seconds")


if __name__ == "__main__":
    main()
