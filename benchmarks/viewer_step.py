"""How long the viewer takes to show the next image's attribution map, segments and verdicts, in the real
window (offscreen), on a project that has an explanation (e.g. the one benchmarks/steps_time.py --keep
leaves at 224x224).

For the first N images of the explanation, one after the other as N and P step through them: select the
image, process the window's events, repaint the viewer; the time of each step, mean and slowest. Then the
same in compare mode (two maps side by side).

    QT_QPA_PLATFORM=offscreen python benchmarks/viewer_step.py PROJECT [--n 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project")
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from lvlmva_desktop.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    win = MainWindow()
    win.resize(1600, 1000)
    win.show()
    win.open_project(args.project)
    app.processEvents()
    s = win.session
    _, t = s.project.explanation(s.explanation_id())
    ids = [int(v) for v in t["sample_ids"].tolist()][: args.n]
    pane = win.heatmap
    print(f"{s.project.image_size[0]}x{s.project.image_size[1]} images, explanation {s.explanation_id()}, "
          f"{len(ids)} images")  # fmt: skip

    def step_through(label: str) -> None:
        times = []
        for sid in ids:
            t0 = time.perf_counter()
            s.select_sample(sid)
            app.processEvents()
            for v in pane.views:
                v.repaint()
            times.append(time.perf_counter() - t0)
        print(f"{label}: mean {statistics.mean(times) * 1000:.0f} ms, slowest {max(times) * 1000:.0f} ms, "
              f"first {times[0] * 1000:.0f} ms")  # fmt: skip

    step_through("next image (one map)")
    pane.compare_check.setChecked(True)
    app.processEvents()
    step_through("next image (compare: two maps)")
    win.close()


if __name__ == "__main__":
    main()
