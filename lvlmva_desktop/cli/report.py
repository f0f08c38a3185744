"""The command line's audit report: one self-contained HTML file and a PDF of the same content.

lvlmva report proj --out audit/              # audit/report.html and audit/report.pdf
lvlmva report proj --out audit/ --no-pdf     # the HTML only
"""

from __future__ import annotations

import argparse
import sys


def cmd_report(args: argparse.Namespace) -> int:
    from lvlmva_desktop.cli.common import Bar, device_of, tell_notes
    from lvlmva_desktop.core.store.lock import ProjectLocked
    from lvlmva_desktop.core.store.project import Project
    from lvlmva_desktop.report.document import write_report

    device = device_of(args)
    try:
        project = Project.open(args.project, read_only=bool(getattr(args, "read_only", False)))
        if project.read_only:
            tell_notes(project)
            print(
                "note: the project is read-only, so this report is not recorded in its audit log.",
                file=sys.stderr,
            )
    except ProjectLocked as e:  # the report only reads: make it anyway, without logging it
        print(f"note: {e} Writing the report read-only; it is not recorded in the audit log.")
        project = Project.open(args.project, read_only=True, reason="held")
    with project as p, Bar(args.quiet) as state:
        written = write_report(p, args.out, device, pdf=args.pdf, state=state)
    for path in written:
        print(path)
    return 0


def register(sub, add) -> None:
    sp = add("report", cmd_report, "write the audit report (HTML and PDF) into a folder")
    sp.add_argument("--out", required=True, help="folder for report.html and report.pdf (created if needed)")
    sp.add_argument(
        "--pdf", action=argparse.BooleanOptionalAction, default=True, help="also write report.pdf (default)"
    )
