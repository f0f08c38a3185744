"""Qt-free engine, one folder per concern: data/ (the images coming in), method/ (the method's steps,
METHOD.md), store/ (the project: its database, files, audit log, lock and recovery), views/ (what the window
shows, computed without Qt) and runtime/ (jobs, devices, memory, offline, errors).

Nothing in this package may import PySide6 or pyqtgraph, nor the lvlm, report, cli or gui packages above it
(checked by import-linter in the test suite), so the same code runs behind the GUI, on the command line, in
tests and on a GPU machine without Qt.
"""
