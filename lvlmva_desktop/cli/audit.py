"""The command line's audit log: list every change to a project, and verify the hash chain.

lvlmva audit proj              # one line per entry, newest last
lvlmva audit proj --json       # every entry in full (params, hashes, chain)
lvlmva audit proj --verify     # exit 0 "audit log intact: N entries, head <hash>", 1 with the problems
"""

from __future__ import annotations

import argparse
import json

from lvlmva_desktop.core.runtime.timefmt import when

WIDTH = 160  # one line per entry, cut at this width


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def entry_line(e: dict) -> str:
    """One compact line: id, local time, user, action, params, hashes (12 hex digits each)."""
    stamp = when(e["time"])
    params = e["params"] if isinstance(e["params"], dict) else {"params": e["params"]}
    hashes = e["hashes"] if isinstance(e["hashes"], dict) else {"hashes": e["hashes"]}
    # the hashes first: they are short, and what a long parameter (a path) would push past the width
    parts = [f"{k}:{str(v)[:12]}" for k, v in hashes.items()]
    parts += [f"{k}={_short(v)}" for k, v in params.items() if v not in (None, "", [], {})]
    line = f"{e['id']:5d}  {stamp}  {e['user']}  {e['action']:18s} " + "  ".join(parts)
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."


def cmd_audit(args: argparse.Namespace) -> int:
    from lvlmva_desktop.cli.common import tell_notes
    from lvlmva_desktop.core.store import audit
    from lvlmva_desktop.core.store.project import Project

    with Project.open(args.project, read_only=True) as p:  # looking only: works beside a writer too
        tell_notes(p)
        if args.verify:
            from lvlmva_desktop.cli.common import Bar
            from lvlmva_desktop.core.store.integrity import verify_content

            result = audit.verify_project(p)
            for w in result.warnings:
                print(f"warning: {w}")
            print(result.summary())
            for problem in result.problems:
                print(f"  - {problem}")
            with Bar(args.quiet) as state:
                content = verify_content(p, state, images=not args.quick)
            print(content.summary())
            for check in content.checks:
                print(f"  {'ok  ' if check.ok else 'DIFF'} {check.line()}")
                for problem in check.problems:
                    print(f"       - {problem}")
                if check.more:
                    print(f"       - ... and {check.more} more")
                for note in check.notes[:3]:
                    print(f"       (note: {note})")
            return 0 if result.ok and content.ok else 1
        items = audit.entries(p.db)
        if args.json:
            print(json.dumps(items, indent=2, ensure_ascii=False))
        else:
            for e in items:
                print(entry_line(e))
            if not items:
                print("The audit log of this project is empty.")
    return 0


def register(sub, add) -> None:
    sp = add("audit", cmd_audit, "list the project's audit log (newest last) or verify its hash chain")
    sp.add_argument(
        "--verify",
        action="store_true",
        help="check the hash chain, then the project's tables and files against what the log recorded "
        "(images, labels, caches, models, explanations, verdicts, metrics, runs); exit 1 on any difference",
    )
    sp.add_argument(
        "--quick",
        action="store_true",
        help="with --verify: do not hash every image file (faster on large sets)",
    )
    sp.add_argument("--json", action="store_true", help="every entry in full, as JSON")
