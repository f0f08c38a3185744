"""Composition root of the application (`lvlmva-desktop`, `python -m lvlmva_desktop`).

Starting the application opens the desktop window on a project: the one given with --project, else the
built-in demo project (generated ISIC-like skin lesions with coloured patches as the shortcut), built on
first start. ``--headless-demo`` runs the whole pipeline on the demo in the terminal instead (as
``lvlmva demo`` does); ``--self-test`` checks the installation headlessly (selftest.py), without Qt.
"""

from __future__ import annotations

import argparse
import logging
import sys

# Qt's X11 plugin needs these system libraries; without them Qt aborts with a message about "xcb".
XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-keysyms": "libxcb-keysyms1",
    "xkbcommon-x11": "libxkbcommon-x11-0",
}


def missing_display_libraries() -> list[str]:
    """The Debian/Ubuntu packages missing for a window on X11 (empty elsewhere, or when all are there)."""
    import ctypes.util
    import os

    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM", "xcb") != "xcb":
        return []
    if not os.environ.get("DISPLAY"):
        return []
    return [pkg for lib, pkg in XCB_LIBRARIES.items() if ctypes.util.find_library(lib) is None]


def install_excepthook(window) -> None:
    """A failure inside a GUI action (no job around it) is told in the Messages pane, not only on stderr;
    the program keeps running."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            previous(exc_type, exc, tb)
            return
        logging.getLogger("lvlmva_desktop").error("unexpected error", exc_info=(exc_type, exc, tb))
        try:
            window.session.report(exc.with_traceback(tb), "An action in the window")
        except Exception:  # noqa: BLE001 - never fail inside the hook
            previous(exc_type, exc, tb)

    sys.excepthook = hook


def main(argv: list[str] | None = None) -> int:
    from lvlmva_desktop.core.runtime.offline import enforce_offline

    enforce_offline()  # the window and its jobs never download (core/runtime/offline.py)
    ap = argparse.ArgumentParser(prog="lvlmva-desktop", description="LVLM-VA Desktop.")
    ap.add_argument("--project", help="project folder to open (default: the demo project)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument(
        "--headless-demo",
        action="store_true",
        help="run the whole pipeline on the demo project in the terminal",
    )
    ap.add_argument(
        "--self-test",
        action="store_true",
        help="check the installation headlessly (small pipeline, tiny LVLM, audit log); exit 0 when all pass",
    )
    ap.add_argument(
        "--measure-startup",
        metavar="FILE",
        help="open the window and the project, write the start-up times to FILE as JSON, and quit",
    )
    ap.add_argument(
        "--cli",
        nargs=argparse.REMAINDER,
        metavar="ARGS",
        help="run the command line instead (`lvlmva ARGS`), e.g. --cli audit PROJECT --verify",
    )
    args = ap.parse_args(argv)
    if args.cli is not None:  # the packaged program has no separate `lvlmva` executable
        from lvlmva_desktop.cli import main as cli_main

        return cli_main(args.cli)
    if args.self_test:  # before any Qt import: it must run where no display is
        from lvlmva_desktop.selftest import run_self_test

        return run_self_test()
    if args.headless_demo:
        from lvlmva_desktop.cli import main as cli_main

        cmd = ["demo", "--device", args.device] + (["--folder", args.project] if args.project else [])
        return cli_main(cmd)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    missing = missing_display_libraries()
    if missing:
        print(
            "error: the window cannot open: the system lacks libraries Qt needs for X11. Install them, e.g. "
            f"`sudo apt install {' '.join(missing)}`, or run `lvlmva-desktop --headless-demo`.",
            file=sys.stderr,
        )
        return 1
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from lvlmva_desktop.gui import gc_guard

    gc_guard.install(app)  # cyclic garbage is collected on this thread only, never in a job's thread
    if args.measure_startup:  # queued first: its first turn comes before the project opens
        from lvlmva_desktop.gui import startup_probe

        startup_probe.install(app, args.measure_startup)
    app.setOrganizationName("LVLM-VA")
    app.setApplicationName("LVLM-VA Desktop")
    from lvlmva_desktop.gui.main_window import MainWindow
    from lvlmva_desktop.gui.session import Session
    from lvlmva_desktop.gui.theme import apply_theme

    apply_theme(app)
    window = MainWindow(Session(device=args.device))
    # The window is up before torch is imported (no pane imports it at module level; tests/gui/test_startup.py);
    # torch and torchvision load when the project opens, right after the first paint.
    window.statusBar().showMessage("Loading…")
    window.show()
    install_excepthook(window)

    def open_first() -> None:
        QApplication.processEvents()  # the window's first paint, before the seconds of importing torch
        if args.project:
            opened = window.open_project(args.project)
        else:
            window.open_demo()  # opens it, or first builds it in a job that opens it when done
            opened = True
        window.statusBar().clearMessage()
        if not opened:  # opening a project fills in the device
            window.show_device()

    QTimer.singleShot(0, open_first)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
