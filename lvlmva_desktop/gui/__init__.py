"""The desktop application: PySide6 + pyqtgraph views over the Qt-free core."""
