"""The installed Qt binding must not leak or drop references in ordinary calls.

PySide6 6.12.0 on CPython 3.11 takes one reference off None on every call of a Qt function that returns
nothing; after enough calls the interpreter aborts (none_dealloc). pyproject.toml excludes that release;
this test catches the same fault in any other release before users do.
"""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QLabel


def test_void_calls_keep_the_reference_count_of_none(qtbot):
    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(1000):
        label.setText("x")
        label.update()
    assert abs(sys.getrefcount(None) - before) < 50
