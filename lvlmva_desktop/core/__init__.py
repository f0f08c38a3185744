"""Qt-free engine: data, models, explanations, segmentation, critics, alignment, metrics, project store.

Nothing in this package may import PySide6 or pyqtgraph (checked by import-linter in the test suite), so
the same code runs behind the GUI, on the command line, in tests and on a GPU machine without Qt.
"""
