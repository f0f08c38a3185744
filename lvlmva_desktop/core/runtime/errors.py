"""Failures in words a domain expert understands, with the technical details kept apart.

The GUI shows ``title`` and ``message`` and puts ``details`` behind a button; the command line prints one
``error:`` line. Everything that can go wrong in a job passes through :func:`describe_error`, so there is
one place that decides how a failure is told.
"""

from __future__ import annotations

import sqlite3
import traceback
from dataclasses import dataclass

from lvlmva_desktop.core.runtime.jobs import Cancelled

# SQLite's words for a damaged file (raised while reading, e.g. text that is no longer UTF-8).
_DAMAGE_WORDS = ("malformed", "not a database", "could not decode", "corrupt")


class PlainError(Exception):
    """An error whose message is already written for the user (subclassed by the LVLM back-ends' errors)."""

    kind = "internal"


@dataclass(frozen=True)
class UserError:
    title: str  # a few words: what failed
    message: str  # what happened and what to do, in plain words
    details: str  # the exception and its traceback, for a bug report
    kind: str  # "project", "file", "lvlm", "memory", "settings", "cancelled", "internal"


def _details(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()


def describe_error(exc: BaseException, during: str = "") -> UserError:
    """Turn an exception raised by a job into a UserError; ``during`` names the step (e.g. 'Training').
    Nothing secret passes: the texts are scrubbed of keys and passwords (core/runtime/secrets.py)."""
    from lvlmva_desktop.core.runtime.secrets import scrub

    e = _describe(exc, during)
    return UserError(scrub(e.title), scrub(e.message), scrub(e.details), e.kind)


def _describe(exc: BaseException, during: str = "") -> UserError:
    what = f"{during} failed" if during else "The step failed"
    details = _details(exc)
    if isinstance(exc, Cancelled):
        return UserError(
            f"{during or 'The step'} was cancelled",
            "Stopped at your request; nothing was lost.",
            "",
            "cancelled",
        )
    if isinstance(exc, PlainError):
        return UserError(what, str(exc), details, exc.kind)
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        damaged = type(exc) is sqlite3.DatabaseError or any(w in text.lower() for w in _DAMAGE_WORDS)
        return UserError(
            what,
            f"The project database is damaged ({text}). Restore project.sqlite from a backup."
            if damaged
            else f"The project database could not be used ({text}).",
            details,
            "project",
        )
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return UserError(
            what,
            "The computer ran out of memory for this step. Close other programs, use a smaller batch size, "
            "or run it on the CPU if the GPU is too small.",
            details,
            "memory",
        )
    if isinstance(exc, FileNotFoundError):
        name = exc.filename or text
        return UserError(what, f"A file or folder is missing: {name}.", details, "file")
    if isinstance(exc, PermissionError):
        name = exc.filename or text
        return UserError(
            what,
            f"The program may not read or write {name}. Check the folder's permissions.",
            details,
            "file",
        )
    if isinstance(exc, OSError):
        return UserError(
            what, f"A file could not be read or written: {exc.strerror or text}.", details, "file"
        )
    if isinstance(exc, (ValueError, KeyError)):
        return UserError(what, text.strip("'\"") or "A setting or input is not valid.", details, "settings")
    return UserError(
        what,
        "Something unexpected went wrong inside the program. Your project is unchanged by the failed step; "
        "the details below help us find the cause.",
        details,
        "internal",
    )
