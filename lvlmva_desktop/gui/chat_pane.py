"""The critique of the current image and the expert's conversation with the LVLM about it (issue part 5).

Shows, for the image selected anywhere in the window, what the critic wrote, the verdict per segment and
who decided it, the stored transcript, and a box for follow-up questions. Any image of the project can be
discussed: one outside the alignment set (a misclassified test image, say) has no critique, and the LVLM
gets the model's evidence computed for it and the model's prediction (``lvlm.chat.chat_for_image``). Answers stream in piece by
piece from a job on the "view" lane and are stored once complete (``lvlm.chat.ask_and_store``, the same
code path as ``lvlmva ask``); Stop cancels and keeps nothing. "Summarise class" asks the LVLM what the
model relies on for the image's class (``lvlm.chat.summarise_class``, as ``lvlmva summary``).
"""

from __future__ import annotations

import html
import logging
import time

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QAction, QPalette, QTextCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.gui.jobs import Job, JobRunner
from lvlmva_desktop.gui.verdicts import VERDICT_COLOURS, VERDICT_MARKS

log = logging.getLogger(__name__)

ROLE_NAMES = {"user": "You", "assistant": "LVLM"}


def _esc(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts or 0))


class ChatPane(QWidget):
    """Critique, verdicts and chat for the current image of the current explanation."""

    answerPiece = Signal(str)  # every streamed piece, as it arrives (GUI thread)
    answerFinished = Signal(str)  # the complete answer, once stored
    summaryFinished = Signal(str)

    def __init__(self, session, runner: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.runner = runner
        self.generation_settings = None  # lvlm.backend.GenerationSettings; None: the chat's defaults
        self.lvlm_dialog = None
        self._expl_id: int | None = None
        self._sample_id: int = -1
        self._in_set = False  # the image is in the explanation's alignment set (it has a critique)
        self._class_name = ""
        self._job: Job | None = None  # the running question or summary
        self._pending: dict | None = None  # {"key", "question", "pieces"} while an answer streams
        self.setMinimumSize(320, 360)
        self._build()
        session.changed.connect(self._on_changed)
        session.currentSampleChanged.connect(lambda _sid: self.refresh())
        runner.cancelled.connect(self._on_cancelled)
        runner.progress.connect(self._on_progress)
        runner.message.connect(lambda job, m: self._on_progress(job, 0.0, m, -1.0))
        self.refresh()

    # -- layout ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setMargin(16)

        self.header = QLabel()
        self.header.setWordWrap(True)
        self.context = QTextBrowser()
        self.context.setOpenLinks(False)
        self.transcript = QTextBrowser()
        self.transcript.setOpenLinks(False)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.context)
        split.addWidget(self.transcript)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        split.setSizes([300, 300])
        self.splitter = split

        self.lvlm_banner = QWidget()
        bl = QHBoxLayout(self.lvlm_banner)
        bl.setContentsMargins(0, 0, 0, 0)
        self.lvlm_label = QLabel("No vision-language model is configured: choose one to ask questions.")
        self.lvlm_label.setWordWrap(True)
        self.configure_button = QPushButton("Choose an LVLM…")
        self.configure_button.clicked.connect(self.open_lvlm_dialog)
        bl.addWidget(self.lvlm_label, 1)
        bl.addWidget(self.configure_button)

        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Ask about this image, e.g. why is segment 2 spurious? (Enter sends)")
        self.input.setFixedHeight(self.input.fontMetrics().lineSpacing() * 3 + 14)
        self.input.installEventFilter(self)
        self.input.textChanged.connect(self._update_buttons)
        self.ask_button = QPushButton("Ask")
        self.ask_button.setDefault(True)
        self.ask_button.clicked.connect(lambda: self.ask(self.input.toPlainText()))
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the answer; a stopped answer is not kept")
        self.stop_button.clicked.connect(self.stop)
        buttons = QVBoxLayout()
        buttons.addWidget(self.ask_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addLayout(buttons)

        self.summary_action = QAction("Summarise class", self)
        self.summary_action.setToolTip("Ask the LVLM what the model relies on for this image's class")
        self.summary_action.triggered.connect(self.summarise)
        self.summary_button = QPushButton("Summarise class")
        self.summary_button.clicked.connect(self.summary_action.trigger)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color:#808080")
        self.status.hide()
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary_button)
        bottom.addStretch(1)

        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.header)
        lay.addWidget(split, 1)
        lay.addWidget(self.lvlm_banner)
        lay.addLayout(row)
        lay.addWidget(self.status)
        lay.addLayout(bottom)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.message)
        self.stack.addWidget(page)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.stack)

    # -- what is shown --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw for the session's current image and explanation."""
        p = self.session.project
        self._expl_id = self.session.explanation_id() if p is not None else None
        self._sample_id = self.session.current_sample
        self._in_set = False
        if p is None:
            return self._show_message(
                "Open a project to see the critic's notes and ask the LVLM about an image."
            )
        if self._sample_id < 0:
            return self._show_message("Choose an image to read its critique and ask the LVLM about it.")
        if self._expl_id is None and self.session.original_model_id() is None:
            return self._show_message(
                "No model yet: train or import one (step 1); then choose an image to ask the LVLM about it "
                "and the model's evidence."
            )
        from lvlmva_desktop.lvlm import (
            chat as lchat,  # here, not at the top: it imports torch (the window comes first)
        )

        self._in_set = lchat.chat_explanation(p, self._expl_id, self._sample_id) is not None
        row = p.sample_row(self._sample_id)
        self._class_name = p.classes[int(row["label"])] if row is not None else ""
        split = row["split"] if row is not None else ""
        self.stack.setCurrentIndex(1)
        self.summary_button.setText(f"Summarise class '{self._class_name}'")
        where = (
            f"explanation {self._expl_id}"
            if self._in_set
            else f"{html.escape(split)} · not in the alignment set (no critique)"
        )
        self.header.setText(
            f"<b>Image #{self._sample_id}</b> · class <b>{html.escape(self._class_name)}</b> · {where}"
        )
        self._render_context()
        self._render_transcript()
        self._update_lvlm()

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
        self.stack.setCurrentIndex(0)

    def _render_context(self) -> None:
        from lvlmva_desktop.lvlm import chat as lchat

        p, eid, sid = self.session.project, self._expl_id, self._sample_id
        if not self._in_set:
            parts = [
                "<p><b>Not in the alignment set</b></p><p>No critic looked at this image and it has no "
                "verdicts. When you ask, the LVLM sees the image with the model's evidence and numbered "
                "segments computed for it (as the viewer shows them) and is told the model's prediction.</p>"
            ]
            if eid is not None:
                parts.append(self._summary_html(lchat.class_summaries(p, eid, self._class_name)))
            self.context.setHtml("".join(parts))
            return
        verdicts = lchat.sample_verdicts(p, eid, sid)
        rows = []
        for v in verdicts:
            r, g, b = VERDICT_COLOURS.get(v["verdict"], VERDICT_COLOURS[None])
            who = "expert" if v["source"] == "expert" else "critic"
            if v["author"] and v["source"] == "expert":
                who += f" ({v['author']})"
            rows.append(
                f"<tr><td align='center'>{v['number']}</td>"
                f"<td style='color:rgb({r},{g},{b})'><b>{VERDICT_MARKS.get(v['verdict'], '')} "
                f"{html.escape(v['verdict'])}</b></td><td>{html.escape(who)}</td></tr>"
            )
        parts = ["<p><b>Verdicts</b></p>"]
        head = "<tr style='color:#808080'><td>Segment</td><td>Verdict</td><td>Decided by</td></tr>"
        parts.append(
            f"<table cellspacing=0 cellpadding=3>{head}{''.join(rows)}</table>"
            if rows
            else "<p><i>Not critiqued yet.</i></p>"
        )
        notes = lchat.critic_text(p, eid, sid)
        parts.append("<p><b>The critic's notes</b></p>")
        parts.append(f"<p>{_esc(notes)}</p>" if notes.strip() else "<p><i>No notes for this image.</i></p>")
        parts.append(self._summary_html(lchat.class_summaries(p, eid, self._class_name)))
        self.context.setHtml("".join(parts))

    def _summary_html(self, summaries: list[dict]) -> str:
        if not summaries:
            return ""
        s = summaries[-1]
        return (
            f"<a name='summary'></a><p><b>What the model relies on for '{html.escape(self._class_name)}'</b> "
            f"<span style='color:#808080'>(LVLM summary, {_when(s['created'])})</span></p><p>{_esc(s['text'])}</p>"
        )

    def _render_transcript(self) -> None:
        p = self.session.project
        msgs = [(m["role"], m["text"], m["created"]) for m in p.chat_messages(*self._key())]
        pending = self._pending if self._pending and self._pending["key"] == self._key() else None
        if pending:
            msgs.append(("user", pending["question"], time.time()))
        if not msgs:
            self.transcript.setHtml(
                "<p style='color:#808080'><i>No questions about this image yet. The LVLM sees the image, the "
                "numbered segments, the critic's notes and the verdicts above.</i></p>"
            )
            return
        shade = self.palette().color(QPalette.ColorRole.AlternateBase).name()
        blocks = []
        for role, text, created in msgs:
            name = ROLE_NAMES.get(role, role)
            bg = f" bgcolor='{shade}'" if role == "user" else ""
            blocks.append(
                f"<table width='100%' cellpadding=5 cellspacing=0{bg}><tr><td><b>{name}</b> "
                f"<span style='color:#808080'>{_when(created)}</span><br>{_esc(text)}</td></tr></table>"
            )
        if pending:
            blocks.append(
                "<table width='100%' cellpadding=5 cellspacing=0><tr><td><b>LVLM</b><br></td></tr></table>"
            )
        self.transcript.setHtml("".join(blocks))
        if pending:
            self._cursor_end().insertText("".join(pending["pieces"]))
        self.transcript.verticalScrollBar().setValue(self.transcript.verticalScrollBar().maximum())

    def _cursor_end(self) -> QTextCursor:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        return cursor

    def _update_lvlm(self) -> None:
        self.lvlm_banner.setVisible(self.session.lvlm_config() is None)
        self._update_buttons()

    def _update_buttons(self) -> None:
        ready = self.stack.currentIndex() == 1 and self.session.lvlm_config() is not None
        busy = self._job is not None
        self.ask_button.setEnabled(ready and not busy and bool(self.input.toPlainText().strip()))
        self.stop_button.setEnabled(busy)
        summarise = ready and not busy and self._expl_id is not None  # the critiques of an explanation
        self.summary_action.setEnabled(summarise)
        self.summary_button.setEnabled(summarise)
        self.summary_button.setToolTip(
            "" if self._expl_id is not None else "Needs critiques: run steps 3 (Explain) and 4 (Critique)."
        )

    def _key(self) -> tuple[int | None, int]:
        """Where the current image's transcript is stored: (explanation, image), or (None, image) for an
        image outside the alignment set."""
        return (self._expl_id if self._in_set else None, self._sample_id)

    # -- asking ---------------------------------------------------------------------------------------
    def ask(self, question: str) -> Job | None:
        """Ask about the current image; the answer streams into the transcript and is stored when complete."""
        question = question.strip()
        if not question or self._job is not None or self.stack.currentIndex() != 1:
            return None
        eid, sid, settings = self._expl_id, self._sample_id, self.generation_settings
        session = self.session
        model_id, pipeline = session.original_model_id(), session.pipeline_settings()
        try:
            device = session.device()  # the model's evidence of an image outside the set is computed here
        except Exception as e:  # noqa: BLE001 - e.g. a GPU that is not there, told in words
            self.session.report(e, "Choosing the device")
            return None
        reading = "Reading the image and its critique" if self._in_set else "Computing the model's evidence"

        def work(project, state):
            from lvlmva_desktop.lvlm import chat as lchat

            with session.use_lvlm(state) as backend:
                state.info(reading)
                chat = lchat.chat_for_image(
                    project, sid, backend, device, eid, model_id, pipeline, state=state.child(0.0, 0.0)
                )
                state.info("The LVLM is answering")
                return lchat.ask_and_store(
                    project, chat.explanation_id, sid, chat, question, state.partial, state, settings
                )

        self._pending = {"key": self._key(), "question": question, "pieces": []}
        self.input.clear()
        self._render_transcript()
        self._set_status("Waiting for the LVLM (the first question loads the model)…")
        self._job = self.runner.submit(
            Job(
                "chat",
                f"Asking the LVLM about image #{sid}",
                work,
                lane="lvlm",
                on_partial=self._on_piece,
                on_done=self._on_answer,
                on_failed=lambda err: self._on_failed(err, "The LVLM could not answer"),
            )
        )
        self._update_buttons()
        return self._job

    def _on_piece(self, piece: str) -> None:
        if self._pending is None:
            return
        self._pending["pieces"].append(piece)
        if self._pending["key"] == self._key() and self.stack.currentIndex() == 1:
            bar = self.transcript.verticalScrollBar()
            at_end = bar.value() >= bar.maximum() - 4
            self._cursor_end().insertText(piece)
            if at_end:
                bar.setValue(bar.maximum())
            self._set_status("The LVLM is answering…")
        self.answerPiece.emit(piece)

    def _on_answer(self, answer: str) -> None:
        key = self._pending["key"] if self._pending else None
        self._job, self._pending = None, None
        self._set_status(
            "" if key == self._key() else f"The answer about image #{key[1]} was stored with it."
        )
        self.session.notify("chat")  # redraws this pane (and any other that shows the transcript)
        self._update_buttons()
        self.answerFinished.emit(answer)

    def _on_failed(self, err, what: str) -> None:
        pending, self._job, self._pending = self._pending, None, None
        if pending and pending["key"] == self._key() and not self.input.toPlainText().strip():
            self.input.setPlainText(pending["question"])  # nothing is lost: ask again when it is fixed
        self._set_status(f"{what}: {err.message}", error=True)
        self.refresh()

    def _on_cancelled(self, job: Job) -> None:
        if job is not self._job:
            return
        pending, self._job, self._pending = self._pending, None, None
        if pending and pending["key"] == self._key() and not self.input.toPlainText().strip():
            self.input.setPlainText(pending["question"])
        self._set_status("Stopped. A stopped answer is not kept; the question is back in the box.")
        self.refresh()

    def _on_progress(self, job: Job, fraction: float, message: str, left: float) -> None:
        if job is self._job and message and not (self._pending and self._pending["pieces"]):
            self._set_status(f"{message}…")

    def stop(self) -> None:
        """Cancel the running answer or summary (it stops within a generated token or two)."""
        if self._job is not None:
            self.runner.cancel(self._job.lane, kind=self._job.kind)
            self._set_status("Stopping…")

    # -- class summary --------------------------------------------------------------------------------
    def summarise(self) -> Job | None:
        """The LVLM's summary of what the model relies on for the current image's class, shown and stored."""
        if self._job is not None or self.stack.currentIndex() != 1 or not self._class_name:
            return None
        if self._expl_id is None:
            return None  # nothing critiqued to summarise
        eid, cls, settings = self._expl_id, self._class_name, self.generation_settings
        session = self.session

        def work(project, state):
            from lvlmva_desktop.lvlm import chat as lchat

            with session.use_lvlm(state) as backend:
                state.info(f"Summarising the critiques of class {cls}")
                return lchat.summarise_class(project, eid, cls, backend, settings=settings, state=state)

        self._set_status(f"Summarising what the model relies on for '{cls}'…")
        self._job = self.runner.submit(
            Job(
                "chat-summary",
                f"Summarising class {cls}",
                work,
                lane="lvlm",
                on_done=self._on_summary,
                on_failed=lambda err: self._on_failed(err, "The summary failed"),
            )
        )
        self._update_buttons()
        return self._job

    def _on_summary(self, text: str) -> None:
        self._job = None
        self._set_status("The class summary is stored; it is shown under the critic's notes.")
        self.session.notify("chat")
        self.context.scrollToAnchor("summary")
        self._update_buttons()
        self.summaryFinished.emit(text)

    # -- the rest -------------------------------------------------------------------------------------
    def open_lvlm_dialog(self) -> None:
        """Open the LVLM settings (the pane's own button when no LVLM is configured)."""
        from lvlmva_desktop.gui.lvlm_dialog import LVLMDialog

        self.lvlm_dialog = LVLMDialog(self.session, self.runner, self)
        self.lvlm_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.lvlm_dialog.open()

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color:#d0382b" if error else "color:#808080")
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def _on_changed(self, topic: str) -> None:
        if topic in (
            "project",
            "models",
            "explanation",
            "alignment",
            "critique",
            "verdicts",
            "chat",
            "samples",
        ):
            self.refresh()
        elif topic == "lvlm":
            self._update_lvlm()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if (
            obj is self.input
            and event.type() == QEvent.Type.KeyPress
            and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
            and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        ):
            if self.ask_button.isEnabled():
                self.ask(self.input.toPlainText())
            return True  # Enter sends; Shift+Enter starts a new line
        return super().eventFilter(obj, event)
