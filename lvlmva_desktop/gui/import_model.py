"""File > Import a trained classifier: the weights file, its architecture (guessed from the file's tensor
names and shapes; any torchvision classifier) and the preprocessing it was trained with."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QCompleter,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.gui.dialogs import _CheckedDialog, _ok_cancel, _path_row

log = logging.getLogger(__name__)


def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors file, read from its header (no weights are loaded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.replace(",", " ").split())


class ImportClassifierDialog(_CheckedDialog):
    """The classifier's file, architecture and preprocessing; ``values()`` is what import_model takes."""

    def __init__(
        self,
        image_size: tuple[int, int],
        channels: int,
        parent: QWidget | None = None,
        path: str | None = None,
    ) -> None:
        from lvlmva_desktop.core.method.architectures import all_architectures

        super().__init__(parent)
        self.setWindowTitle("Import a trained classifier")
        self.setMinimumWidth(600)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = int(channels)
        form = QFormLayout()
        self.path = QLineEdit()
        self.path.setPlaceholderText("the classifier's state dict: .safetensors (or a .pth of tensors)")
        self.path.editingFinished.connect(self._guess)
        form.addRow("Weights file", _path_row(self.path, self._pick))
        self.arch = QComboBox()
        self.arch.setEditable(True)
        self.arch.addItems(list(all_architectures()))
        self.arch.completer().setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.arch.completer().setFilterMode(Qt.MatchFlag.MatchContains)
        self.arch.setCurrentText("resnet18")
        self.arch.currentTextChanged.connect(self._defaults)
        self.arch.setToolTip("mlp, small_cnn, or any torchvision classification network")
        form.addRow("Architecture", self.arch)
        self.guess_note = QLabel()
        self.guess_note.setWordWrap(True)
        form.addRow("", self.guess_note)
        size_row = QWidget()
        sr = QHBoxLayout(size_row)
        sr.setContentsMargins(0, 0, 0, 0)
        self.height = QSpinBox()
        self.width = QSpinBox()
        for s in (self.height, self.width):
            s.setRange(8, 2048)
            s.setSuffix(" px")
            s.valueChanged.connect(self._summary)
        sr.addWidget(QLabel("height"))
        sr.addWidget(self.height)
        sr.addWidget(QLabel("width"))
        sr.addWidget(self.width)
        self.resize_mode = QComboBox()
        self.resize_mode.addItems(["bilinear", "bicubic", "nearest"])
        self.resize_mode.currentTextChanged.connect(self._summary)
        sr.addWidget(self.resize_mode)
        sr.addStretch(1)
        form.addRow("Network input", size_row)
        self.mean = QLineEdit()
        self.std = QLineEdit()
        for e, what in ((self.mean, "mean"), (self.std, "standard deviation")):
            e.setToolTip(f"The {what} subtracted/divided per channel in training: one number, or three")
            e.textChanged.connect(self._summary)
        form.addRow("Mean", self.mean)
        form.addRow("Std", self.std)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.problem = self._problem_label()
        buttons = _ok_cancel(self, "Import", self._accept)
        self.ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
        lay = QVBoxLayout(self)
        intro = QLabel(
            "The preprocessing is what the classifier was trained with; it is recorded with the model "
            "version and used by every step. The defaults are torchvision's for ImageNet weights."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)
        lay.addLayout(form)
        lay.addWidget(self.summary)
        lay.addWidget(self.problem)
        lay.addWidget(buttons)
        self._defaults()
        if path:
            self.path.setText(path)
            self._guess()

    # -- filling in -------------------------------------------------------------------------------------
    def _pick(self) -> None:
        f, _ = QFileDialog.getOpenFileName(
            self, "Trained classifier weights", "", "Weights (*.safetensors *.pth *.pt);;All files (*)"
        )
        if f:
            self.path.setText(f)
            self._guess()

    def _guess(self) -> None:
        """Pick the architecture whose tensor names and shapes the file has (safetensors headers only)."""
        from lvlmva_desktop.core.method.architectures import guess_architectures

        p = Path(self.path.text().strip()).expanduser()
        self.guess_note.setText("")
        if p.suffix != ".safetensors" or not p.is_file():
            return
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)  # the first guess takes about 2 s
        try:
            found = guess_architectures(file_shapes(p))
        except Exception as e:  # noqa: BLE001 - an unreadable file is told when importing
            log.info("cannot read the tensor names of %s: %s", p, e)
            return
        finally:
            QApplication.restoreOverrideCursor()
        if found:
            self.arch.setCurrentText(found[0])
            self.guess_note.setText(f"The file's tensors match a {' or a '.join(found)}.")
        else:
            self.guess_note.setText("The file matches none of the common architectures: choose it.")

    def _defaults(self) -> None:
        from lvlmva_desktop.core.method.architectures import all_architectures, default_preprocessing

        arch = self.arch.currentText().strip()
        if arch not in all_architectures():
            self._summary()
            return
        try:
            pre = default_preprocessing(arch, self.image_size, self.channels, "imported")
        except ValueError:
            return
        for w, v in ((self.height, pre.input_size[0]), (self.width, pre.input_size[1])):
            w.blockSignals(True)
            w.setValue(int(v))
            w.blockSignals(False)
        self.resize_mode.setCurrentText(pre.resize)
        self.mean.setText(", ".join(f"{v:g}" for v in pre.mean))
        self.std.setText(", ".join(f"{v:g}" for v in pre.std))
        self._summary()

    def _summary(self) -> None:
        from lvlmva_desktop.core.method.architectures import default_preprocessing

        try:
            v = self.values()
            pre = default_preprocessing(
                v["arch"], self.image_size, self.channels, "imported", **v["preprocess"]
            )
        except (ValueError, KeyError) as e:
            self.summary.setText(f"Preprocessing: {e}")
            return
        self.summary.setText(f"The network will see: {pre.describe(self.image_size)}.")

    # -- result -------------------------------------------------------------------------------------------
    def values(self) -> dict:
        return {
            "path": Path(self.path.text().strip()).expanduser(),
            "arch": self.arch.currentText().strip(),
            "preprocess": {
                "input_size": (self.height.value(), self.width.value()),
                "resize": self.resize_mode.currentText(),
                "mean": _numbers(self.mean.text()),
                "std": _numbers(self.std.text()),
            },
        }

    def problem_text(self) -> str:
        from lvlmva_desktop.core.method.architectures import check_architecture, default_preprocessing

        if not self.path.text().strip():
            return "Choose the weights file."
        try:
            v = self.values()
        except ValueError:
            return "Mean and std must be numbers (one, or one per channel)."
        if not v["path"].is_file():
            return f"There is no file {v['path']}."
        try:
            check_architecture(v["arch"])
            default_preprocessing(v["arch"], self.image_size, self.channels, "imported", **v["preprocess"])
        except ValueError as e:
            return str(e)
        return ""
