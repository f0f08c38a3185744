"""The LVLM settings dialog: where the vision-language model lives, and a health check before using it.

The dialog fills the same ``LVLMConfig`` the command line's options fill. "Check" loads the model (or asks
the server) in a job and sends it one request of each kind the critique, the chat and the summary send
(``lvlm.check.check_backend``, exactly as ``lvlmva lvlm-check`` does), and tells the result in words. OK stores the
settings through the session; settings whose Check failed are refused (OK is off and says why until they
change or a Check of them passes). The API key itself is never asked for, only the name of the variable
that holds it.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import time
from pathlib import Path

import shiboken6
from PySide6.QtCore import Qt
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
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStackedWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.gui.jobs import Job, JobRunner
from lvlmva_desktop.lvlm.backend import HealthReport, LVLMError
from lvlmva_desktop.lvlm.check import CALL_KINDS, check_backend
from lvlmva_desktop.lvlm.config import LVLMConfig

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "cuda:0", "cuda:1")
DTYPES = ("auto", "bfloat16", "float16", "float32")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REMOTE_CODE_WARNING = (
    "Runs Python code that comes with the model folder, with your rights on this computer. "
    "Turn it on only for a folder from a source you trust, and only if the model needs it."
)


def config_problem(config: LVLMConfig) -> str | None:
    """What keeps these settings from being used, in words; None when they can be stored."""
    try:
        config.validate()
    except LVLMError as e:
        return str(e)
    if config.kind == "local":
        folder = Path(config.folder).expanduser()
        if not folder.is_dir():
            return f"The model folder {folder} does not exist."
        if not (folder / "config.json").is_file():
            return (
                f"{folder} has no config.json: choose the folder that holds the model's config.json, "
                "tokenizer and *.safetensors weights."
            )
    else:
        if not re.match(r"^https?://", config.base_url):
            return (
                "The server's base URL must start with http:// or https:// (e.g. http://gpu-server:8000/v1)."
            )
        if config.api_key_env and not _ENV_NAME.match(config.api_key_env):
            return (
                "Enter the NAME of the environment variable that holds the API key (e.g. OPENAI_API_KEY), "
                "not the key itself."
            )
    return None


def run_health_check(config: LVLMConfig, state=None) -> HealthReport:
    """Open the LVLM from these settings, check it, close it; a model that cannot be opened is a failed
    check with the reason, not an error (the dialog shows both the same way)."""
    from lvlmva_desktop.lvlm.config import open_backend

    t0 = time.monotonic()
    try:
        backend = open_backend(config, state)
    except LVLMError as e:
        return HealthReport(ok=False, identity={}, problem=str(e), seconds=time.monotonic() - t0)
    try:
        rep = check_backend(backend, state)
    finally:
        backend.close()
    rep.seconds = time.monotonic() - t0  # loading included: what the user waits for
    return rep


def report_html(rep: HealthReport) -> str:
    """The health check in words: pass or fail first, then who the model is and what it answered."""
    e = html.escape
    if rep.ok:
        head = (
            "<p style='color:#2e8b47'><b>✔ The LVLM works.</b> It loaded and answered a test question and "
            "one request of each kind the critique sends.</p>"
        )
    else:
        head = (
            "<p style='color:#d0382b'><b>✘ The check failed.</b></p>"
            f"<p>{e(rep.problem or 'The model did not answer the test question.')}</p>"
        )
    ident = rep.identity or {}
    if ident.get("kind") == "endpoint":
        who = f"{ident.get('model', '?')} at {ident.get('base_url', '?')}"
    elif ident:
        who = f"{ident.get('architecture') or ident.get('model_type', '?')} from {ident.get('folder', '?')}"
    else:
        who = ""
    rows = [
        ("Model", who),
        ("Runs on", rep.device),
        ("Precision", str(ident.get("dtype", "")) if ident.get("kind") == "local" else ""),
        ("Memory", rep.memory),
        ("Test question", rep.test_prompt),
        ("Its answer", repr(rep.test_output) if rep.test_prompt and (rep.ok or rep.test_output) else ""),
        ("Took", f"{rep.seconds:.1f} s, loading included" if rep.seconds else ""),
    ]
    body = "".join(
        f"<tr><td style='color:#808080;padding-right:10px'>{e(k)}</td><td>{e(v)}</td></tr>"
        for k, v in rows
        if v
    )
    what = dict(CALL_KINDS)
    calls = "".join(
        f"<tr><td style='color:#808080;padding-right:10px'>{e(c['kind'])}</td>"
        + (
            f"<td>✔ {e(what.get(c['kind'], c['kind']))}: {e(repr(c['output']))}</td></tr>"
            if c["ok"]
            else f"<td style='color:#d0382b'>✘ {e(what.get(c['kind'], c['kind']))}: {e(c['problem'])}</td></tr>"
        )
        for c in rep.calls
    )
    warnings = "".join(f"<p style='color:#b8860b'>⚠ {e(w)}</p>" for w in rep.warnings)
    return (
        head
        + warnings
        + (f"<table>{body}</table>" if body else "")
        + (f"<p><b>Requests tried</b></p><table>{calls}</table>" if calls else "")
    )


class LVLMDialog(QDialog):
    """Edit the LVLM settings, check them, and store them in the session on OK."""

    def __init__(self, session, runner: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.runner = runner
        self.last_report: HealthReport | None = None
        self._check_job: Job | None = None
        self._checked: dict[str, HealthReport] = {}  # settings (as JSON) -> their latest Check
        self._checking: str | None = None  # the settings the running Check is checking
        self.setWindowTitle("Vision-language model (LVLM)")
        self.setMinimumWidth(520)

        intro = QLabel(
            "The LVLM critiques the explanations and answers your questions in the chat. "
            "It runs on this computer from a model folder, or on your site's server."
        )
        intro.setWordWrap(True)

        self.local_radio = QRadioButton("A model folder on this computer")
        self.endpoint_radio = QRadioButton("A server (OpenAI-compatible API)")
        kinds = QButtonGroup(self)
        kinds.addButton(self.local_radio)
        kinds.addButton(self.endpoint_radio)
        self.local_radio.setChecked(True)
        kind_row = QHBoxLayout()
        kind_row.addWidget(self.local_radio)
        kind_row.addWidget(self.endpoint_radio)
        kind_row.addStretch(1)

        self.pages = QStackedWidget()
        self.pages.addWidget(self._local_page())
        self.pages.addWidget(self._endpoint_page())
        self.local_radio.toggled.connect(lambda on: self.pages.setCurrentIndex(0 if on else 1))
        self.local_radio.toggled.connect(self._changed)

        self.check_button = QPushButton("Check")
        self.check_button.setToolTip(
            "Load the model (or ask the server) and send it one request of each kind the critique sends"
        )
        self.check_button.clicked.connect(self.check)
        self.check_progress = QProgressBar()
        self.check_progress.setRange(0, 0)
        self.check_progress.setMaximumHeight(14)
        self.check_progress.setTextVisible(False)
        self.check_progress.hide()
        self.check_status = QLabel(
            "Loads the model and sends it a test question and one request of each kind the critique sends "
            "(seconds to minutes)."
        )
        self.check_status.setWordWrap(True)
        self.check_status.setStyleSheet("color:#808080")
        check_row = QHBoxLayout()
        check_row.addWidget(self.check_button)
        check_row.addWidget(self.check_status, 1)
        check_row.addWidget(self.check_progress)
        self.check_progress.setFixedWidth(120)
        self.report_view = QTextBrowser()
        self.report_view.setMinimumHeight(120)
        self.report_view.setOpenLinks(False)
        self.report_view.hide()

        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color:#d0382b")
        self.problem.hide()

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)

        lay = QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addLayout(kind_row)
        lay.addWidget(self.pages)
        lay.addLayout(check_row)
        lay.addWidget(self.report_view, 10)
        lay.addStretch(1)
        lay.addWidget(self.problem)
        lay.addWidget(self.buttons)

        self.set_config(session.lvlm_config() or LVLMConfig())

    # -- pages ----------------------------------------------------------------------------------------
    def _local_page(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        form.setContentsMargins(0, 4, 0, 4)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("the folder with config.json and *.safetensors")
        self.folder_edit.textChanged.connect(self._changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.browse_button = browse
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(browse)
        form.addRow("Folder", row)
        self.device_combo = QComboBox()
        self.device_combo.setEditable(True)
        self.device_combo.addItems(DEVICES)
        self.device_combo.setToolTip("auto: the first GPU if there is one, else the CPU")
        self.device_combo.currentTextChanged.connect(self._changed)
        form.addRow("Device", self.device_combo)
        self.dtype_combo = QComboBox()
        self.dtype_combo.addItems(DTYPES)
        self.dtype_combo.setToolTip("auto: bfloat16 on a GPU that supports it, else float32")
        self.dtype_combo.currentTextChanged.connect(self._changed)
        form.addRow("Precision", self.dtype_combo)
        self.remote_code_check = QCheckBox("Run code shipped with the model (trust_remote_code)")
        self.remote_code_check.toggled.connect(self._changed)
        self.remote_code_warning = QLabel("⚠ " + REMOTE_CODE_WARNING)
        self.remote_code_warning.setWordWrap(True)
        self.remote_code_warning.setStyleSheet("color:#b06000")
        self.remote_code_check.toggled.connect(self._update_warning)
        remote = QVBoxLayout()
        remote.setSpacing(2)
        remote.addWidget(self.remote_code_check)
        remote.addWidget(self.remote_code_warning)
        form.addRow("", remote)
        return page

    def _endpoint_page(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        form.setContentsMargins(0, 4, 0, 4)
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("http://gpu-server:8000/v1")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("the model's name on the server")
        self.key_env_edit = QLineEdit()
        self.key_env_edit.setPlaceholderText("e.g. OPENAI_API_KEY: the variable's name, never the key")
        self.key_env_status = QLabel()
        self.key_env_status.setStyleSheet("color:#808080")
        self.key_env_status.setWordWrap(True)
        for w in (self.url_edit, self.model_edit, self.key_env_edit):
            w.textChanged.connect(self._changed)
        self.timeout_spin = QDoubleSpinBox()
        self.timeout_spin.setRange(1, 3600)
        self.timeout_spin.setDecimals(0)
        self.timeout_spin.setSuffix(" s")
        self.timeout_spin.valueChanged.connect(self._changed)
        self.concurrency_spin = QSpinBox()
        self.concurrency_spin.setRange(1, 64)
        self.concurrency_spin.valueChanged.connect(self._changed)
        form.addRow("Base URL", self.url_edit)
        form.addRow("Model name", self.model_edit)
        form.addRow("API key variable", self.key_env_edit)
        form.addRow("", self.key_env_status)
        form.addRow("Timeout", self.timeout_spin)
        form.addRow("Parallel requests", self.concurrency_spin)
        return page

    def _browse(self) -> None:
        start = self.folder_edit.text() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "The LVLM's model folder", start)
        if folder:
            self.folder_edit.setText(folder)

    def _update_warning(self) -> None:
        on = self.remote_code_check.isChecked()
        self.remote_code_warning.setStyleSheet("color:#d0382b; font-weight:bold" if on else "color:#b06000")

    def _changed(self, *_: object) -> None:
        name = self.key_env_edit.text().strip()
        if not name:
            self.key_env_status.setText("No key: the server accepts requests without one.")
        elif not _ENV_NAME.match(name):
            self.key_env_status.setText("This does not look like a variable name.")
        elif os.environ.get(name):
            self.key_env_status.setText(f"{name} is set in this program's environment.")
        else:
            self.key_env_status.setText(f"{name} is not set in this program's environment.")
        self.problem.hide()
        self._update_ok()

    @staticmethod
    def _key(config: LVLMConfig) -> str:
        return json.dumps(config.to_dict(), sort_keys=True, default=str)

    def check_failed(self) -> bool:
        """Whether the settings as shown are ones whose latest Check failed."""
        if not hasattr(self, "ok_button"):
            return False  # still being built
        rep = self._checked.get(self._key(self.config()))
        return rep is not None and not rep.ok

    def _update_ok(self) -> None:
        """OK is off for settings whose Check failed, and the reason is shown above the buttons."""
        if not hasattr(self, "ok_button"):
            return
        failed = self.check_failed()
        self.ok_button.setEnabled(not failed)
        self.ok_button.setToolTip(
            "The check of these settings failed: change them, or Check again once the problem is fixed."
            if failed
            else ""
        )
        if failed:
            why = self._checked[self._key(self.config())].problem or "The model did not answer."
            first = re.split(r"(?<=[.!?])\s", why.strip(), maxsplit=1)[0]  # the whole reason is above
            self._show_problem(
                f"The check of these settings failed: {first} OK cannot store them: change the settings, "
                "or fix the problem and Check again; or Cancel."
            )

    # -- the settings ---------------------------------------------------------------------------------
    def config(self) -> LVLMConfig:
        """The settings as the fields show them now."""
        return LVLMConfig(
            kind="local" if self.local_radio.isChecked() else "endpoint",
            folder=self.folder_edit.text().strip(),
            device=self.device_combo.currentText().strip() or "auto",
            dtype=self.dtype_combo.currentText(),
            trust_remote_code=self.remote_code_check.isChecked(),
            base_url=self.url_edit.text().strip(),
            model=self.model_edit.text().strip(),
            api_key_env=self.key_env_edit.text().strip(),
            timeout_s=float(self.timeout_spin.value()),
            max_concurrency=int(self.concurrency_spin.value()),
        )

    def set_config(self, config: LVLMConfig) -> None:
        (self.local_radio if config.kind == "local" else self.endpoint_radio).setChecked(True)
        self.pages.setCurrentIndex(0 if config.kind == "local" else 1)
        self.folder_edit.setText(config.folder)
        self.device_combo.setCurrentText(config.device)
        self.dtype_combo.setCurrentText(config.dtype if config.dtype in DTYPES else "auto")
        self.remote_code_check.setChecked(config.trust_remote_code)
        self.url_edit.setText(config.base_url)
        self.model_edit.setText(config.model)
        self.key_env_edit.setText(config.api_key_env)
        self.timeout_spin.setValue(config.timeout_s)
        self.concurrency_spin.setValue(config.max_concurrency)
        self._update_warning()
        self._changed()

    def _show_problem(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.show()

    # -- check ----------------------------------------------------------------------------------------
    def check(self) -> None:
        """Run the health check of the settings as shown, in a job; the result appears below."""
        config = self.config()
        try:
            config.validate()  # an empty field is told here; a wrong folder or server by the check itself
        except LVLMError as e:
            self._show_problem(str(e))
            return
        self._checking = self._key(config)
        self.check_button.setEnabled(False)
        self.check_progress.show()
        self.check_status.setText("Checking: loading the model and asking a test question…")
        self.report_view.hide()
        self._check_job = self.runner.submit(
            Job(
                "lvlm-check",
                "Checking the LVLM",
                lambda project, state: self._health_check(config, state),
                lane="lvlm",
                needs_project=False,
                on_done=self._check_done,
                on_failed=self._check_failed,
            )
        )
        self.runner.progress.connect(self._check_progress)
        self.runner.cancelled.connect(self._check_cancelled)

    def _health_check(self, config: LVLMConfig, state) -> HealthReport:
        """(In the job.) The settings in use are checked on the session's model, which then stays loaded
        for the critique and the chat; other settings on a model loaded for the check only."""
        session = self.session
        current = session.lvlm_config()
        if current is None or current.to_dict() != config.to_dict():
            return run_health_check(config, state)
        t0 = time.monotonic()
        try:
            with session.use_lvlm(state) as backend:
                rep = check_backend(backend, state)
        except LVLMError as e:
            return HealthReport(ok=False, identity={}, problem=str(e), seconds=time.monotonic() - t0)
        rep.seconds = time.monotonic() - t0
        return rep

    def is_checking(self) -> bool:
        return self._check_job is not None

    def _check_progress(self, job: Job, fraction: float, message: str, left: float) -> None:
        if job is self._check_job and message:
            self.check_status.setText(f"Checking: {message}…")

    def _end_check(self, rep: HealthReport | None = None) -> None:
        """The check ended: ``rep`` is its result for the settings it checked (None: it was stopped)."""
        self._check_job = None
        if rep is not None and self._checking is not None:
            self._checked[self._checking] = rep
        self._checking = None
        for sig, slot in (
            (self.runner.progress, self._check_progress),
            (self.runner.cancelled, self._check_cancelled),
        ):
            try:
                sig.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        self.check_button.setEnabled(True)
        self.check_progress.hide()
        self.problem.hide()
        self._update_ok()

    def _check_done(self, rep: HealthReport) -> None:
        if not shiboken6.isValid(self):
            return  # the dialog was closed while the check ran
        self._end_check(rep)
        self.last_report = rep
        self.check_status.setText("Passed." if rep.ok else "Failed: see why below.")
        self.report_view.setHtml(report_html(rep))
        self.report_view.show()

    def _check_failed(self, error) -> None:
        if not shiboken6.isValid(self):
            return
        rep = HealthReport(ok=False, identity={}, problem=error.message)
        self._end_check(rep)
        self.last_report = rep
        self.check_status.setText("Failed: see why below.")
        self.report_view.setHtml(report_html(self.last_report))
        self.report_view.show()

    def _check_cancelled(self, job: Job) -> None:
        if job is self._check_job:
            self._end_check()
            self.check_status.setText("The check was stopped.")

    # -- closing --------------------------------------------------------------------------------------
    def accept(self) -> None:
        config = self.config()
        if self.check_failed():
            self._update_ok()  # says why
            return
        problem = config_problem(config)
        if problem:
            self._show_problem(problem)
            return
        self._stop_check()
        self.session.set_lvlm_config(config)
        super().accept()

    def reject(self) -> None:
        self._stop_check()
        super().reject()

    def _stop_check(self) -> None:
        if self._check_job is not None:
            self.runner.cancel("lvlm", kind="lvlm-check")

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.focusWidget() is self.folder_edit:
            return  # Enter in the folder field must not close the dialog half-filled
        super().keyPressEvent(event)
