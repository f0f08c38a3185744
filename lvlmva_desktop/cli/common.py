"""What every command shares: the progress bar, the settings a command runs with, opening the project,
the device, and the latest id of a step's product."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from tqdm import tqdm

log = logging.getLogger("lvlmva")


class Bar:
    """A TaskState whose progress drives a tqdm bar on stderr, with an estimate of the time left.

    A job's progress may go back: the LVLM critic reports its critic, judge and strict-retry passes over
    the same share of the bar, one after the other. Each time the progress goes back a new stage begins:
    the bar starts over from there and the time left is measured anew on that stage's own pace
    (core.runtime.jobs.TimeLeft forgets the earlier stage), "unknown" until that pace is known. tqdm's own
    estimate is not shown: it divides by the average pace since the start, so a bar that went back from
    100 % to 5 % after five minutes said more than an hour. ``clock`` gives seconds (injectable for tests).
    """

    def __init__(self, quiet: bool, clock=None, file=None) -> None:
        import time

        from lvlmva_desktop.core.runtime.jobs import TaskState, TimeLeft

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


def parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def pipeline_settings(args: argparse.Namespace, tell="stdout"):
    """The settings a command runs with: the project's saved settings (what the expert chose in the window),
    then ``--settings FILE``, then ``--set NAME=VALUE``, then the command's own flags (--arch, --seed), each
    winning over the ones before (core/method/settings_schema.py). Prints one line per setting that is not its
    default, saying where it came from (to ``tell``: "stdout", a file, or None for nothing)."""
    from lvlmva_desktop.core.method.settings_schema import describe_sources, resolve

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


def open_project(args: argparse.Namespace):
    from lvlmva_desktop.core.store.project import Project

    project = Project.open(args.project, read_only=bool(getattr(args, "read_only", False)))
    tell_notes(project)
    return project


def tell_notes(project) -> None:
    """What the opening found that the user should know (a read-only folder, unsaved log changes)."""
    for note in getattr(project, "notes", []):
        print(f"note: {note}", file=sys.stderr)


def device_of(args: argparse.Namespace):
    from lvlmva_desktop.core.runtime.devices import resolve_device

    return resolve_device(getattr(args, "device", None))


def latest(project, table: str, given: int | None, what: str) -> int:
    if given is not None:
        return given
    got = project.latest_id(table)
    if got is None:
        raise ValueError(f"This project has no {what} yet; run the step that makes it first.")
    return got
