"""Method > Check the critic…: the blind spot-check of the critic's verdicts (core/method/spotcheck.py).

The expert picks how many segments to check and starts; the dialog then shows one segment at a time (the
image, and the image with the segment outlined and the rest dimmed), with the class and its description
and one plain question, never the critic's answer, so that the expert's judgement is not anchored on it.
Spurious / Relevant / Undecided (keys S / R / U) answer and move on, Back (Backspace or Ctrl+Z) takes the
last answer back, Finish now scores what was answered. At the end the critic's verdict accuracy is shown
with its interval, per verdict, and what that accuracy meant in the benchmark; the spot-check is stored
(a run, the expert's verdicts, an audit entry) and the window told ("verdicts", "spot_check").

The window opens it with ``SpotCheckDialog(session, parent).exec()``.
"""

from __future__ import annotations

import html
import logging

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QImage, QKeySequence, QPainter, QPalette, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

INTRO = (
    "Check how often the critic is right. The program draws segments at random from the critic's verdicts "
    "and shows you each one <b>without the critic's answer</b>, so that your judgement is your own. Say for "
    "each whether the outlined region is relevant evidence for the image's class or a spurious feature. "
    "At the end you see how often the critic agreed with you, with a 95% interval, and what that accuracy "
    "meant in the benchmarks. Your answers are kept as your verdicts."
)
TEXT_WIDTH = 960  # the longest line of text, in pixels
KEYS_HINT = (
    "Keys: S spurious · R relevant · U undecided · Backspace back. Closing now stores nothing; "
    "Finish now scores and stores the answers given."
)


class _Picture(QWidget):
    """An image drawn as large as the widget allows, keeping its aspect and its pixels (no smoothing)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image: QImage | None = None
        self.setMinimumSize(320, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_image(self, image: QImage | None) -> None:
        self.image = image
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(600, 300)

    def paintEvent(self, event) -> None:  # noqa: N802, ANN001 - Qt's name
        if self.image is None or self.image.isNull():
            return
        w, h = self.width(), self.height()
        iw, ih = self.image.width(), self.image.height()
        scale = min(w / iw, h / ih)
        dw, dh = iw * scale, ih * scale
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(QRectF((w - dw) / 2, (h - dh) / 2, dw, dh), self.image)
        painter.end()


def _qimage(pil) -> QImage:
    rgb = pil.convert("RGB")
    data = rgb.tobytes()
    return QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888).copy()


def _interval(r) -> str:
    return "" if r is None else f"{r[0]:.2f} to {r[1]:.2f}"


class SpotCheckDialog(QDialog):
    """The blind spot-check, from the choice of how many segments to the stored result."""

    def __init__(self, session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.setWindowTitle("Check the critic")
        self.setMinimumSize(640, 520)
        self.resize(920, 680)
        self.expl_id: int | None = None
        self.items: list = []
        self.answers: list[str] = []
        self.pictures: list[QImage] = []
        self.classes: dict[int, tuple[str, str]] = {}
        self.result = None
        self.run_id: int | None = None
        self._meaning = ""
        self.pages = QStackedWidget()
        self.pages.addWidget(self._setup_page())
        self.pages.addWidget(self._ask_page())
        self.pages.addWidget(self._result_page())
        lay = QVBoxLayout(self)
        lay.addWidget(self.pages)
        self._prepare()

    # -- page 1: how many -------------------------------------------------------------------------------
    def _setup_page(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        title = QLabel("<h2>Check the critic</h2>")
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        self.available = QLabel()
        self.available.setWordWrap(True)
        self.count = QSpinBox()
        self.count.setRange(1, 1)
        self.count.setToolTip("How many of the critic's verdicts to check: more gives a narrower interval")
        self.count.setMinimumWidth(110)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        form.addRow("Segments to check", self.count)
        self.width_hint = QLabel()
        self.width_hint.setWordWrap(True)
        self.width_hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.count.valueChanged.connect(self._show_width_hint)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #c0392b")
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(close)
        row.addWidget(self.start_button)
        for x in (title, intro, self.available):
            x.setMaximumWidth(TEXT_WIDTH)  # lines a reader can follow on a wide screen
            lay.addWidget(x)
        lay.addLayout(form)
        lay.addWidget(self.width_hint)
        lay.addWidget(self.message)
        lay.addStretch(1)
        lay.addLayout(row)
        return w

    def _prepare(self) -> None:
        """What can be checked now: a clear word where there is nothing (no project, no critique)."""
        from lvlmva_desktop.core.method.spotcheck import DEFAULT_N, critic_population

        project = self.session.project
        problem, n = "", 0
        if project is None:
            problem = "Open a project first."
        else:
            self.expl_id = self.session.explanation_id()
            if self.expl_id is None:
                problem = (
                    "There is no explanation yet, so there is no critique to check: explain the alignment set "
                    "and critique it first (Method menu)."
                )
            else:
                try:
                    pop = critic_population(project, self.expl_id)
                except Exception as e:  # noqa: BLE001 - told in the dialog, the window stays usable
                    self.session.report(e, "Reading the critic's verdicts")
                    pop = {}
                n = sum(len(v) for v in pop.values())
                if not project.has_verdicts(self.expl_id, "critic"):
                    problem = (
                        "There is no critique yet: there is no critic verdict to check. Critique the "
                        "explanations first (Method > Critique…)."
                    )
                elif n == 0:
                    problem = (
                        "You have already decided every segment the critic judged: there is nothing left to "
                        "check blind."
                    )
                elif self.session.read_only:
                    problem = (
                        "This project is open read-only: a spot-check stores its result and your answers, so it "
                        "cannot be made here."
                    )
        self.message.setText(problem)
        self.available.setText(
            f"{n} of the critic's verdicts (on segments that hold evidence and that you have not decided yet) "
            f"can be checked on explanation {self.expl_id}."
            if n
            else ""
        )
        self.count.setRange(1, max(1, n))
        self.count.setValue(min(DEFAULT_N, max(1, n)))
        self.count.setEnabled(not problem)
        self.start_button.setEnabled(not problem)
        self._show_width_hint()

    def _show_width_hint(self) -> None:
        from lvlmva_desktop.core.method.spotcheck import wilson_interval

        n = self.count.value()
        lo, hi = wilson_interval(0.87 * n, n)
        self.width_hint.setText(
            f"With {n} segments, a critic right 87% of the time would be placed between {lo:.2f} and {hi:.2f}."
        )

    # -- page 2: one segment at a time ---------------------------------------------------------------------
    def _ask_page(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        top = QHBoxLayout()
        self.progress = QLabel()
        self.progress.setStyleSheet("font-weight: 600")
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(8)
        top.addWidget(self.progress)
        top.addWidget(self.progress_bar, 1)
        self.picture = _Picture()
        legend = QLabel("Left: the image.  Right: the segment outlined, the rest dimmed.")
        legend.setAlignment(Qt.AlignmentFlag.AlignCenter)
        legend.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.caption = QLabel()
        self.caption.setStyleSheet("font-weight: 600")
        self.description = QLabel()
        self.description.setWordWrap(True)
        self.question = QLabel()
        self.question.setWordWrap(True)
        self.question.setStyleSheet("font-size: 11pt")
        self.spurious_button = self._answer_button("Spurious  (S)", "S", "spurious", w)
        self.relevant_button = self._answer_button("Relevant  (R)", "R", "relevant", w)
        self.undecided_button = self._answer_button("Undecided  (U)", "U", "undecided", w)
        self.spurious_button.setToolTip("A spurious feature: it should not decide the class (S)")
        self.relevant_button.setToolTip("Relevant evidence for the class (R)")
        self.undecided_button.setToolTip("I cannot tell: not counted, your verdict is not set (U)")
        self.back_button = QPushButton("Back")
        self.back_button.setToolTip("Take the last answer back (Backspace, Ctrl+Z)")
        self.back_button.clicked.connect(self.back)
        for key in (QKeySequence(Qt.Key.Key_Backspace), QKeySequence(QKeySequence.StandardKey.Undo)):
            QShortcut(key, w).activated.connect(self.back)  # active while this page is shown
        self.finish_button = QPushButton("Finish now")
        self.finish_button.setToolTip("Score and store the answers given so far")
        self.finish_button.clicked.connect(self.finish)
        answers = QHBoxLayout()
        answers.addWidget(self.back_button)
        answers.addStretch(1)
        for b in (self.spurious_button, self.relevant_button, self.undecided_button):
            answers.addWidget(b)
        answers.addStretch(1)
        answers.addWidget(self.finish_button)
        hint = QLabel(KEYS_HINT)
        hint.setWordWrap(True)
        hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        lay.addLayout(top)
        lay.addWidget(self.picture, 1)
        lay.addWidget(legend)
        lay.addWidget(self.caption)
        lay.addWidget(self.description)
        lay.addWidget(self.question)
        lay.addLayout(answers)
        lay.addWidget(hint)
        return w

    def _answer_button(self, text: str, key: str, verdict: str, page: QWidget) -> QPushButton:
        b = QPushButton(text)
        b.setMinimumWidth(140)
        b.setMinimumHeight(34)
        b.setAutoDefault(False)
        b.clicked.connect(lambda: self.answer(verdict))
        QShortcut(QKeySequence(key), page).activated.connect(b.click)  # active while the page is shown
        return b

    def start(self) -> None:
        """Draw the sample and show the first segment."""
        from lvlmva_desktop.core.method.spotcheck import draw_sample, item_pictures

        project = self.session.project
        if project is None or self.expl_id is None:
            return
        try:
            self.items = draw_sample(project, self.expl_id, n=self.count.value())
            bg = self.palette().color(QPalette.ColorRole.Window)
            pics = item_pictures(
                project, self.expl_id, self.items, background=(bg.red(), bg.green(), bg.blue())
            )
        except Exception as e:  # noqa: BLE001 - told in the dialog's words and the window's
            self.message.setText(str(e))
            self.session.report(e, "Starting the spot-check")
            return
        self.pictures = [_qimage(p) for p in pics]
        _, descriptions = project.class_descriptions()
        rows = {r["id"]: r for r in project.samples()}
        self.classes = {}
        for item in self.items:
            name = project.classes[rows[item.sample_id]["label"]]
            self.classes[item.sample_id] = (name, descriptions.get(name, ""))
        self.answers = []
        self.progress_bar.setRange(0, len(self.items))
        self.pages.setCurrentIndex(1)
        self._show_item()

    def _show_item(self) -> None:
        i = len(self.answers)
        n = len(self.items)
        item = self.items[i]
        name, description = self.classes[item.sample_id]
        self.progress.setText(f"{i + 1} of {n}")
        self.progress_bar.setValue(i)
        self.picture.set_image(self.pictures[i])
        self.caption.setText(f"Image #{item.sample_id} · class {html.escape(name)}")
        self.description.setText(
            f"What counts for {html.escape(name)}: {html.escape(description)}"
            if description
            else f"No description of {html.escape(name)} was saved."
        )
        self.question.setText(
            f"Is the outlined region <b>relevant evidence</b> for {html.escape(name)}, or a <b>spurious "
            "feature</b> that should not decide the class?"
        )
        self.back_button.setEnabled(i > 0)
        self.finish_button.setEnabled(i > 0)

    def answer(self, verdict: str) -> None:
        if self.pages.currentIndex() != 1 or len(self.answers) >= len(self.items):
            return
        self.answers.append(verdict)
        if len(self.answers) == len(self.items):
            self.finish()
        else:
            self._show_item()

    def back(self) -> None:
        if self.pages.currentIndex() == 1 and self.answers:
            self.answers.pop()
            self._show_item()

    def finish(self) -> None:
        """Score and store the answers given, then show the result."""
        from lvlmva_desktop.core.method.spotcheck import save_spot_check, score

        project = self.session.project
        if project is None or not self.answers:
            return
        self.result = score(self.items, self.answers)
        try:
            self.run_id = save_spot_check(project, self.expl_id, self.items, self.answers, self.result)
        except Exception as e:  # noqa: BLE001 - told; the answers stay in the dialog
            self.session.report(e, "Storing the spot-check")
            return
        self.session.notify("verdicts", "spot_check")
        self._show_result()
        from lvlmva_desktop.core.method.spotcheck import summary_lines

        told = summary_lines(self.result) + ([self._meaning] if self._meaning else [])
        self.session.tell(f"Critic spot-check (run {self.run_id})", "\n".join(told))

    # -- page 3: the result ------------------------------------------------------------------------------------
    def _result_page(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.addWidget(QLabel("<h2>The critic's verdict accuracy</h2>"))
        self.headline = QLabel()
        self.headline.setStyleSheet("font-size: 15pt; font-weight: 600")
        self.headline.setWordWrap(True)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QLabel()
        self.table.setTextFormat(Qt.TextFormat.RichText)
        self.meaning = QLabel()
        self.meaning.setWordWrap(True)
        self.meaning.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.stored = QLabel()
        self.stored.setWordWrap(True)
        self.stored.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(close)
        for x in (self.headline, self.summary, self.table, self.meaning, self.stored):
            x.setMaximumWidth(TEXT_WIDTH)
            lay.addWidget(x)
        lay.addStretch(1)
        lay.addLayout(row)
        return w

    def _show_result(self) -> None:
        from lvlmva_desktop.core.method.spotcheck import STRATA, latest_spot_check

        r = self.result
        if r.accuracy is None:
            self.headline.setText("Not measured: you decided none of the segments.")
        else:
            self.headline.setText(f"{r.accuracy:.2f}  (95% interval {_interval(r.interval)})")
        lines = []
        if r.accuracy is not None:
            line = f"The critic agreed with you on {r.n_agreed} of the {r.n_counted} segments you decided"
            if f"{r.accuracy:.2f}" != f"{r.n_agreed / r.n_counted:.2f}":
                line += (
                    f"; counted by how often the critic gives each verdict, that is {r.accuracy:.2f} (the sample "
                    "holds more of its rarer verdicts than their share)"
                )
            lines.append(line + ".")
        if r.n_expert_undecided:
            lines.append(f"You answered “undecided” on {r.n_expert_undecided}: not counted.")
        if r.n_answered < r.n_drawn:
            lines.append(f"{r.n_drawn - r.n_answered} of {r.n_drawn} segments were not answered.")
        self.summary.setText("<br>".join(lines))
        head = "".join(
            f"<th style='padding: 2px 10px; text-align: {a}'>{t}</th>"
            for t, a in (
                ("The critic's verdict", "left"),
                ("Checked", "right"),
                ("Agreed", "right"),
                ("Accuracy", "right"),
                ("95% interval", "left"),
            )
        )
        body = ""
        for v in STRATA:
            st = r.strata.get(v)
            if st is None or st.drawn == 0:
                continue
            acc = "n/a" if st.accuracy is None else f"{st.accuracy:.2f}"
            cells = ((v, "left"), (st.counted, "right"), (st.agreed, "right"), (acc, "right"))
            cells += ((_interval(st.interval), "left"),)
            body += "<tr>" + "".join(
                f"<td style='padding: 2px 10px; text-align: {a}'>{t}</td>" for t, a in cells
            ) + "</tr>"  # fmt: skip
        self.table.setText(f"<table cellspacing='0'><tr>{head}</tr>{body}</table>")
        stored = latest_spot_check(self.session.project, self.expl_id)
        meaning = self._meaning = stored["meaning"] if stored else ""
        self.meaning.setText(
            (f"<b>What it means.</b> {html.escape(meaning)}<br><br>" if meaning else "")
            + "The accuracy on the critic's “spurious” verdicts matters most: a false “spurious” verdict forbids "
            "real evidence, and in the benchmark such errors on 13% of the relevant segments undid the alignment, "
            "while missing artefacts cost little."
        )
        written = stored["written"] if stored else 0
        self.stored.setText(
            f"Stored as run {self.run_id} with an audit entry; {written} of your answers were saved as your "
            "verdicts. The audit report shows this spot-check."
        )
        self.pages.setCurrentIndex(2)
