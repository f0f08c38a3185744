"""Small dialogs of the window: a new project from images, and the choice of critic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)


def _path_row(edit: QLineEdit, pick) -> QWidget:
    w = QWidget()
    row = QHBoxLayout(w)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    b = QPushButton("Browse…")
    b.clicked.connect(pick)
    row.addWidget(b)
    return w


def _ok_cancel(dialog: QDialog, ok_text: str, on_ok: Callable[[], None]) -> QDialogButtonBox:
    """OK (named ``ok_text``, calling ``on_ok``) and Cancel (rejecting ``dialog``)."""
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    buttons.button(QDialogButtonBox.StandardButton.Ok).setText(ok_text)
    buttons.accepted.connect(on_ok)
    buttons.rejected.connect(dialog.reject)
    return buttons


class _CheckedDialog(QDialog):
    """A dialog whose OK accepts only when ``problem_text()`` is empty; else it says the problem in
    ``self.problem`` (made by ``_problem_label``) and stays open."""

    problem: QLabel

    def problem_text(self) -> str:
        raise NotImplementedError

    @staticmethod
    def _problem_label() -> QLabel:
        label = QLabel()
        label.setStyleSheet("color: #c0392b")
        label.setWordWrap(True)
        return label

    def _accept(self) -> None:
        problem = self.problem_text()
        self.problem.setText(problem)
        if not problem:
            self.accept()


class NewProjectDialog(_CheckedDialog):
    """Where the project goes, where the images come from (class folders or a CSV manifest), their size."""

    def __init__(self, parent: QWidget | None = None, source: Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New project")
        self.setMinimumWidth(560)
        form = QFormLayout()
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("an empty or new folder for the project")
        form.addRow("Project folder", _path_row(self.folder, self._pick_folder))
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. Chest X-ray triage, site A")
        form.addRow("Name", self.name)
        self.kind = QComboBox()
        self.kind.addItem("A folder with one subfolder per class", "folder")
        self.kind.addItem("A CSV manifest (path, label, optional group, split, mask)", "csv")
        form.addRow("Images from", self.kind)
        self.source = QLineEdit()
        form.addRow("Source", _path_row(self.source, self._pick_source))
        self.size = QSpinBox()
        self.size.setRange(16, 1024)
        self.size.setValue(64)
        self.size.setSuffix(" px")
        self.size.setToolTip("Images are resized to this square size for the classifier.")
        form.addRow("Image size", self.size)
        self.channels = QComboBox()
        self.channels.addItem("Colour (RGB)", 3)
        self.channels.addItem("Greyscale", 1)
        form.addRow("Channels", self.channels)
        self.problem = self._problem_label()
        buttons = _ok_cancel(self, "Create and import", self._accept)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.problem)
        lay.addWidget(buttons)
        if source is not None:  # a folder or CSV dropped on the window
            self.kind.setCurrentIndex(self.kind.findData("csv" if Path(source).is_file() else "folder"))
            self.source.setText(str(source))
            if not self.name.text():
                self.name.setText(Path(source).stem)

    def _pick_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Project folder")
        if d:
            self.folder.setText(d)
            if not self.name.text():
                self.name.setText(Path(d).name)

    def _pick_source(self) -> None:
        if self.kind.currentData() == "csv":
            f, _ = QFileDialog.getOpenFileName(self, "CSV manifest", "", "CSV files (*.csv);;All files (*)")
        else:
            f = QFileDialog.getExistingDirectory(self, "Folder with one subfolder per class")
        if f:
            self.source.setText(f)

    def values(self) -> dict:
        folder = Path(self.folder.text().strip()).expanduser()
        return {
            "folder": folder,
            "name": self.name.text().strip() or folder.name,
            "source": Path(self.source.text().strip()).expanduser(),
            "source_kind": self.kind.currentData(),
            "image_size": self.size.value(),
            "channels": self.channels.currentData(),
        }

    def problem_text(self) -> str:
        v = self.values()
        if not self.folder.text().strip():
            return "Choose a folder for the project."
        if v["folder"].exists() and any(v["folder"].iterdir()):
            return "The project folder must be empty or new."
        if not self.source.text().strip() or not v["source"].exists():
            return "Choose where the images are."
        if v["source_kind"] == "csv" and not v["source"].is_file():
            return "The CSV manifest must be a file."
        if v["source_kind"] == "folder" and not v["source"].is_dir():
            return "The image source must be a folder."
        return ""


class CritiqueDialog(QDialog):
    """Which critic judges the segments; the simulated one is labelled as a benchmark stand-in."""

    def __init__(self, lvlm_label: str | None, has_masks: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Critique the explanations")
        self.setMinimumWidth(520)
        lay = QVBoxLayout(self)
        intro = QLabel(
            "A critic judges every segment of every explanation in the alignment set as relevant or "
            "spurious, against your class descriptions. Your own verdicts always override it."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)
        self.group = QButtonGroup(self)
        self.lvlm = QRadioButton(
            f"Vision-language model: {lvlm_label}"
            if lvlm_label
            else "Vision-language model (not configured yet)"
        )
        self.lvlm.setEnabled(lvlm_label is not None)
        self.simulated = QRadioButton("Simulated critic (benchmark stand-in, not an LVLM)")
        self.simulated.setToolTip(
            "Judges segments from the ground-truth artefact masks with deliberate errors, to stand in for an "
            "LVLM of known verdict accuracy. Only for data with artefact masks; labelled as such everywhere."
        )
        self.simulated.setEnabled(has_masks)
        self.expert = QRadioButton("No critic: only my own verdicts")
        for i, b in enumerate((self.lvlm, self.simulated, self.expert)):
            self.group.addButton(b, i)
            lay.addWidget(b)
        acc_row = QHBoxLayout()
        acc_row.addSpacing(24)
        acc_row.addWidget(QLabel("Verdict accuracy of the stand-in"))
        self.accuracy = QDoubleSpinBox()
        self.accuracy.setRange(0.0, 1.0)
        self.accuracy.setSingleStep(0.01)
        self.accuracy.setValue(0.87)
        acc_row.addWidget(self.accuracy)
        acc_row.addStretch(1)
        lay.addLayout(acc_row)
        lvlm_opts = QVBoxLayout()
        lvlm_opts.setContentsMargins(24, 0, 0, 0)
        self.one_call = QCheckBox("One call per image (faster: critic and judge together)")
        self.one_call.setToolTip(
            "By default the LVLM first describes and argues (critic), then a second call turns that text "
            "into verdicts (judge). One call does both at once: fewer calls, sometimes less careful."
        )
        lvlm_opts.addWidget(self.one_call)
        self.use_cache = QCheckBox("Reuse earlier answers")
        self.use_cache.setChecked(True)
        self.use_cache.setToolTip(
            "An image whose picture, explanation, description, prompts and model are unchanged is not asked "
            "again; its earlier answer is reused (recorded as such)."
        )
        lvlm_opts.addWidget(self.use_cache)
        lay.insertLayout(2, lvlm_opts)  # under the LVLM choice
        lay.removeItem(acc_row)
        lay.insertLayout(4, acc_row)  # under the simulated critic's choice
        self.lvlm.toggled.connect(self.one_call.setEnabled)
        self.lvlm.toggled.connect(self.use_cache.setEnabled)
        (self.lvlm if lvlm_label else self.simulated if has_masks else self.expert).setChecked(True)
        self.one_call.setEnabled(self.lvlm.isChecked())
        self.use_cache.setEnabled(self.lvlm.isChecked())
        self.simulated.toggled.connect(self.accuracy.setEnabled)
        self.accuracy.setEnabled(self.simulated.isChecked())
        buttons = _ok_cancel(self, "Critique", self.accept)
        lay.addWidget(buttons)

    def choice(self) -> tuple[str, float]:
        kind = {0: "lvlm", 1: "simulated", 2: "expert"}[self.group.checkedId()]
        return kind, self.accuracy.value()

    def lvlm_options(self) -> dict:
        return {"one_call": self.one_call.isChecked(), "use_cache": self.use_cache.isChecked()}
