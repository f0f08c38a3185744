"""The cost of proving the data: `lvlmva audit --verify` on a large project, and what the checks add to the
steps (issue 17).

Builds (once, cached under bench_out/, the same project as benchmarks/gui_open.py) a project of N small
PNG images (default 50,000 of 32x32), then measures:

* the hash chain's verification (core/store/audit.py);
* the content's verification (core/store/integrity.py), with every image file hashed and without (--quick);
* what a step pays for the checks of its inputs: the image list against the log (``check_data``), and a
  decoded split's file against its logged hash (the first load after a restart hashes it; a second load in
  the same process reads the remembered answer), next to the decoding itself.

    python benchmarks/verify.py                  # 50,000 images in bench_out/gui-open-50000
    python benchmarks/verify.py --n 5000 --folder /tmp/verify-bench
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--folder", help="where to build the project (default bench_out/gui-open-N)")
    args = ap.parse_args()
    from gui_open import build_project

    from lvlmva_desktop.core.store import audit
    from lvlmva_desktop.core.store import samples as project_samples
    from lvlmva_desktop.core.store.integrity import verify_content
    from lvlmva_desktop.core.store.project import Project

    folder = Path(args.folder or ROOT / "bench_out" / f"gui-open-{args.n}")
    proj = build_project(folder, args.n, args.size)
    with Project.open(proj) as p:
        n = len(p.samples())
        t = time.perf_counter()
        chain = audit.verify_project(p)
        t_chain = time.perf_counter() - t
        t = time.perf_counter()
        quick = verify_content(p, images=False)
        t_quick = time.perf_counter() - t
        t = time.perf_counter()
        full = verify_content(p, images=True)
        t_full = time.perf_counter() - t
        print(f"project: {n} images of {args.size}x{args.size} ({proj})")
        print(f"hash chain: {chain.summary()} in {t_chain:.2f} s")
        print(f"content without hashing the images (--quick): {quick.summary()} in {t_quick:.2f} s")
        print(f"content with every image file hashed: {full.summary()} in {t_full:.2f} s")
        t = time.perf_counter()
        p.check_data()
        t_data = time.perf_counter() - t
        project_samples._VERIFIED_CACHES.clear()
        t = time.perf_counter()
        split = p.load_split("train")  # decodes (and logs) the first time, then reads the cache
        t_first = time.perf_counter() - t
        project_samples._VERIFIED_CACHES.clear()  # as after a restart
        t = time.perf_counter()
        p.load_split("train")
        t_cold = time.perf_counter() - t
        t = time.perf_counter()
        p.load_split("train")
        t_warm = time.perf_counter() - t
        print(
            f"per step: the image list against the log {t_data:.2f} s; load_split of {len(split.y)} training "
            f"images: first {t_first:.1f} s (decoding, or the cache if it exists), after a restart {t_cold:.2f} s "
            f"(the cache hashed and compared once), then {t_warm:.2f} s"
        )


if __name__ == "__main__":
    main()
