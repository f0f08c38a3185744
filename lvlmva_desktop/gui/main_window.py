"""The main window: the panes in docks, the method's steps in a menu and toolbar, jobs in the status bar.

The window composes; it holds no data of its own. Panes read the project through the Session and redraw
on its topics; every slow step runs as a Job through the one JobRunner; every failure lands in the
Messages pane. Window layout and theme are remembered in QSettings.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence, QUndoGroup
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QToolBar,
    QWidget,
)

from lvlmva_desktop.core.runtime.errors import UserError
from lvlmva_desktop.gui import workflow
from lvlmva_desktop.gui.jobs import Job, JobRunner
from lvlmva_desktop.gui.messages import MessagesPane
from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.gui.theme import THEMES, apply_theme, current_theme
from lvlmva_desktop.gui.training_widgets import format_time_left

log = logging.getLogger(__name__)


#: how many projects File > Open recent lists
RECENT_MAX = 8


def recent_projects() -> list[Path]:
    value = QSettings().value("recent/projects", [])
    if isinstance(value, str):  # QSettings gives one string for a one-item list in some formats
        value = [value]
    return [Path(v) for v in (value or []) if v]


def remember_recent(root: Path) -> None:
    root = Path(root).resolve()
    folders = [root] + [f for f in recent_projects() if f.resolve() != root]
    QSettings().setValue("recent/projects", [str(f) for f in folders[:RECENT_MAX]])


def dropped_path(mime) -> Path | None:  # noqa: ANN001
    """The one local folder or CSV file dragged onto the window, if that is what it is."""
    urls = mime.urls() if mime is not None and mime.hasUrls() else []
    if len(urls) != 1 or not urls[0].isLocalFile():
        return None
    path = Path(urls[0].toLocalFile())
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv"):
        return path
    return None


#: room for the window manager's title bar and frame around the window's own size
FRAME_ALLOWANCE = (16, 40)


def initial_window_size(avail_w: int, avail_h: int) -> tuple[int, int]:
    """The window's first size on a screen whose free area is avail_w x avail_h: 80% of it, at least
    1366x768 where that fits, and never more than the free area less the frame."""
    fit_w, fit_h = avail_w - FRAME_ALLOWANCE[0], avail_h - FRAME_ALLOWANCE[1]
    w = min(fit_w, max(1366, int(avail_w * 0.8)))
    h = min(fit_h, max(768, int(avail_h * 0.8)))
    return max(w, 640), max(h, 480)


class MainWindow(QMainWindow):
    def __init__(self, session: Session | None = None, runner: JobRunner | None = None) -> None:
        super().__init__()
        self.setObjectName("MainWindow")
        self.setWindowTitle("LVLM-VA Desktop")
        self.session = session or Session(parent=self)
        self.runner = runner or JobRunner(lambda: self.session.root, parent=self)
        self.undo_group = QUndoGroup(self)
        self._build_panes()
        self._build_actions()
        self._build_menus_and_toolbar()
        self._build_status_bar()
        self._connect()
        self._default_state = self.saveState()
        self.setAcceptDrops(True)  # a project folder, a class-folder tree or a CSV manifest
        self._fit_to_screen()
        self._restore_window_state()
        self._update_title()
        self._update_actions()

    def resize(self, *args) -> None:  # noqa: ANN002 - QWidget.resize(w, h) or resize(QSize)
        super().resize(*args)
        self._requested = QSize(*args) if len(args) == 2 else QSize(args[0])

    def _fit_to_screen(self) -> None:
        """First size: the screen's free area (less the title bar and frame), never more; on a large
        screen 80% of it. A 1366x768 laptop sees the whole window, status bar included."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            self.resize(1366, 768)
            return
        area = screen.availableGeometry()
        size = initial_window_size(area.width(), area.height())
        self.resize(size[0], size[1])
        self._auto_size = self.size()  # a caller's own resize before the first show wins over ours
        self.move(area.x() + (area.width() - size[0]) // 2, area.y() + max(0, (area.height() - size[1]) // 3))

    # -- panes --------------------------------------------------------------------------------------------
    def _build_panes(self) -> None:
        from lvlmva_desktop.gui.browser import BrowserPane
        from lvlmva_desktop.gui.chat_pane import ChatPane
        from lvlmva_desktop.gui.heatmap import HeatmapPane
        from lvlmva_desktop.gui.results import ResultsPane
        from lvlmva_desktop.gui.review import ReviewPane
        from lvlmva_desktop.gui.spec_editor import SpecEditorPane
        from lvlmva_desktop.gui.training import TrainingPane

        s, r = self.session, self.runner
        self.heatmap = HeatmapPane(s, r)
        self.setCentralWidget(self.heatmap)
        self.browser = BrowserPane(s, r)
        self.spec_editor = SpecEditorPane(s, r)
        self.chat = ChatPane(s, r)
        self.training = TrainingPane(s, r)
        self.results = ResultsPane(s, r)
        self.messages = MessagesPane()
        self.review = ReviewPane(s, r, getattr(self.heatmap, "undo_stack", None))
        self.review.segmentRequested.connect(self._show_segment)
        self.docks: dict[str, QDockWidget] = {}
        left, right, bottom = (
            Qt.DockWidgetArea.LeftDockWidgetArea,
            Qt.DockWidgetArea.RightDockWidgetArea,
            Qt.DockWidgetArea.BottomDockWidgetArea,
        )
        self._dock("browser", "Images", self.browser, left)
        self._dock("review", "Review", self.review, left)
        self._dock("chat", "Critique && chat", self.chat, right)
        self._dock("spec", "Class descriptions", self.spec_editor, right)
        self._dock("training", "Training", self.training, right)
        self._dock("results", "Results", self.results, right)
        self._dock("messages", "Messages", self.messages, bottom)
        self.tabifyDockWidget(self.docks["browser"], self.docks["review"])
        self.docks["browser"].raise_()
        self.tabifyDockWidget(self.docks["chat"], self.docks["spec"])
        self.tabifyDockWidget(self.docks["spec"], self.docks["training"])
        self.tabifyDockWidget(self.docks["training"], self.docks["results"])
        self.docks["chat"].raise_()
        self._sized = False
        for pane in (self.spec_editor, self.heatmap):
            stack = getattr(pane, "undo_stack", None)
            if stack is not None:
                self.undo_group.addStack(stack)
        if getattr(self.heatmap, "undo_stack", None) is not None:
            self.undo_group.setActiveStack(self.heatmap.undo_stack)

    def _dock(self, key: str, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{key}")
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        self.addDockWidget(area, dock)
        self.docks[key] = dock
        return dock

    # -- actions ------------------------------------------------------------------------------------------
    def _action(self, text: str, slot, shortcut: str | QKeySequence | None = None, tip: str = "") -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        if tip:
            a.setStatusTip(tip)
            a.setToolTip(
                f"{text.replace('&', '').rstrip('…')}: {tip}"
                + (f" ({a.shortcut().toString()})" if shortcut else "")
            )
        a.triggered.connect(lambda _checked=False: slot())  # not slot(checked): slots take their own defaults
        return a

    def _build_actions(self) -> None:
        A = self._action
        self.act_new = A(
            "&New project…",
            self.new_project,
            QKeySequence.StandardKey.New,
            "Create a project and import images.",
        )
        self.act_open = A(
            "&Open project…",
            self.open_project_dialog,
            QKeySequence.StandardKey.Open,
            "Open a project folder.",
        )
        self.act_demo = A(
            "Open the &demo project",
            self.open_demo,
            None,
            "The built-in demo: skin lesions with coloured patches.",
        )
        self.act_import_model = A(
            "&Import a trained classifier…",
            self.import_classifier,
            None,
            "Audit a model you trained elsewhere (weights as .safetensors) instead of training one here.",
        )
        self.act_export = A(
            "&Export results…", self.export_results, "Ctrl+E", "Write the results and verdicts to a folder."
        )
        self.act_report = A(
            "Audit &report…",
            self.audit_report,
            None,
            "Write the audit report (HTML and PDF): data, descriptions, prompts, verdicts, runs, metrics.",
        )
        self.last_report: Path | None = None
        self.act_open_report = A(
            "Open the last &report", self.open_last_report, None, "Open the audit report written last."
        )
        self.act_open_report.setEnabled(False)
        self.act_verify_audit = A(
            "&Verify audit log",
            self.verify_audit_log,
            None,
            "Check that no change to the project's record was altered.",
        )
        self.act_quit = A("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_undo = self.undo_group.createUndoAction(self, "&Undo")
        self.act_undo.setShortcut(QKeySequence.StandardKey.Undo)
        self.act_redo = self.undo_group.createRedoAction(self, "&Redo")
        self.act_redo.setShortcut(QKeySequence.StandardKey.Redo)
        self.act_train = A(
            "1 &Train", self.train, "Ctrl+1", "Train the original classifier on the training images."
        )
        self.act_sample = A(
            "2 &Sample", self.sample, "Ctrl+2", "Choose the alignment set: the images the model is surest of."
        )
        self.act_explain = A(
            "3 &Explain", self.explain, "Ctrl+3", "Attributions and segments for the alignment set."
        )
        self.act_critique = A(
            "4 &Critique…",
            self.critique,
            "Ctrl+4",
            "Let a critic judge every segment against your descriptions.",
        )
        self.act_spot_check = A(
            "Check the &critic…",
            self.spot_check,
            None,
            "A blind spot-check: judge a random sample of segments yourself, without the critic's answers; "
            "tells the critic's verdict accuracy and what it means for the alignment.",
        )
        self.act_align = A(
            "5 &Retrain",
            self.align,
            "Ctrl+5",
            "Fine-tune the model to stop using the segments judged spurious.",
        )
        self.act_evaluate = A(
            "6 E&valuate", self.evaluate, "Ctrl+6", "Accuracy per group before and after, on the test images."
        )
        self.act_cancel = A(
            "&Cancel running step", self.cancel_job, "Ctrl+.", "Stop the running step; finished work is kept."
        )
        self.act_resume = A(
            "Res&ume interrupted step",
            self.resume_interrupted,
            None,
            "Continue the step a crash or a killed program left unfinished (a critique goes on where it "
            "stopped; other steps run again).",
        )
        self.act_lvlm = A(
            "LVLM &settings…",
            self.lvlm_settings,
            "Ctrl+L",
            "Choose the vision-language model and check that it works.",
        )
        self.method_actions = [
            self.act_train,
            self.act_sample,
            self.act_explain,
            self.act_critique,
            self.act_align,
            self.act_evaluate,
        ]

    def _build_menus_and_toolbar(self) -> None:
        mb = self.menuBar()
        m = mb.addMenu("&File")
        for a in (self.act_new, self.act_open):
            m.addAction(a)
        self.recent_menu = m.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._fill_recent()
        m.addAction(self.act_demo)
        m.addAction(self.act_import_model)
        m.addSeparator()
        m.addAction(self.act_export)
        m.addAction(self.act_report)
        m.addAction(self.act_open_report)
        m.addAction(self.act_verify_audit)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = mb.addMenu("&Edit")
        m.addAction(self.act_undo)
        m.addAction(self.act_redo)
        m = mb.addMenu("&Method")
        for a in self.method_actions:
            m.addAction(a)
            if a is self.act_critique:
                m.addAction(self.act_spot_check)
        m.addSeparator()
        m.addAction(self.act_resume)
        m.addAction(self.act_cancel)
        m = mb.addMenu("Re&view")
        for a in self.review.actions_:
            m.addAction(a)
            self.addAction(a)  # N, P and A work anywhere in the window (text boxes keep their letters)
        m = mb.addMenu("&LVLM")
        m.addAction(self.act_lvlm)
        self.view_menu = mb.addMenu("&View")
        for key in ("browser", "review", "chat", "spec", "training", "results", "messages"):
            self.view_menu.addAction(self.docks[key].toggleViewAction())
        self.view_menu.addSeparator()
        theme_menu = self.view_menu.addMenu("&Theme")
        self.theme_group = QActionGroup(self)
        for t in THEMES:
            a = QAction(
                {"system": "Follow the system", "light": "Light", "dark": "Dark"}[t], self, checkable=True
            )
            a.setData(t)
            a.setChecked(t == current_theme())
            a.triggered.connect(lambda _=False, t=t: self.set_theme(t))
            self.theme_group.addAction(a)
            theme_menu.addAction(a)
        self.view_menu.addAction(self._action("&Reset layout", self.reset_layout))
        m = mb.addMenu("&Help")
        from lvlmva_desktop.gui.help import PAGES

        self.help_actions = []
        for i, (text, page) in enumerate(PAGES):
            a = self._action(text, lambda t=text, p=page: self.show_help(t, p), "F1" if i == 0 else None)
            m.addAction(a)
            self.help_actions.append(a)
        self.act_shortcuts = self._action("&Keyboard shortcuts", self.show_shortcuts)
        m.addAction(self.act_shortcuts)
        m.addSeparator()
        m.addAction(self._action("&About", self.about))
        tb = QToolBar("Method")
        tb.setObjectName("toolbar-method")
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        tb.addAction(self.act_open)
        tb.addSeparator()
        for a in self.method_actions:
            tb.addAction(a)
        tb.addSeparator()
        tb.addAction(self.act_lvlm)
        self.addToolBar(tb)
        self.toolbar = tb

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.job_label = QLabel("")
        self.job_progress = QProgressBar()
        self.job_progress.setMaximumWidth(260)
        self.job_progress.setRange(0, 1000)
        self.job_progress.setTextVisible(True)
        self.job_cancel = QPushButton("Cancel")
        self.job_cancel.setToolTip("Stop the running step (Ctrl+.); finished work is kept.")
        self.job_cancel.clicked.connect(self.cancel_job)
        self.device_label = QLabel("Device: …")
        self.device_label.setToolTip("Where training, explanations and a local LVLM run.")
        for w in (self.job_label, self.job_progress, self.job_cancel):
            sb.addPermanentWidget(w)
            w.setVisible(False)
        sb.addPermanentWidget(self.device_label)

    def _connect(self) -> None:
        s, r = self.session, self.runner
        s.changed.connect(self._on_changed)
        s.error.connect(self.show_error)
        s.notice.connect(lambda title, text: self.messages.post("info", title, text))
        r.started.connect(self._on_job_started)
        r.progress.connect(self._on_job_progress)
        r.finished.connect(self._on_job_finished)
        r.failed.connect(lambda job, err: self.show_error(err))
        r.cancelled.connect(self._on_job_cancelled)
        r.message.connect(self._on_job_message)
        r.busyChanged.connect(lambda _: self._update_actions())
        self.messages.posted.connect(self._on_message_posted)
        QApplication.instance().focusChanged.connect(self._on_focus_changed)
        # "Follow the system": a light/dark switch of the desktop re-themes the running program
        QApplication.styleHints().colorSchemeChanged.connect(self._on_system_scheme_changed)

    # -- project ------------------------------------------------------------------------------------------
    def _settle_unsaved_descriptions(self, what: str) -> bool:
        """Before the descriptions editor loses its text (another project, quitting): save, discard or
        stay. Returns False when the user chose to stay."""
        if not getattr(self.spec_editor, "has_unsaved_changes", lambda: False)():
            return True
        answer = QMessageBox.question(
            self,
            "Unsaved class descriptions",
            f"The class descriptions have changes that are not saved. Save them before {what}?",
            QMessageBox.StandardButton.Save
            | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel,
        )
        if answer == QMessageBox.StandardButton.Save:
            return bool(self.spec_editor.save())
        return answer == QMessageBox.StandardButton.Discard

    def open_project(self, root: str | Path) -> bool:
        if self.session.project is not None and not self._settle_unsaved_descriptions(
            "opening another project"
        ):
            return False
        from lvlmva_desktop.core.store.lock import ProjectLocked
        from lvlmva_desktop.gui.recovery import ask_read_only, interrupted_notice

        try:
            self.session.open_project(root)
        except Exception as e:  # noqa: BLE001 - told in words in the messages pane
            self.session.report(e, "Opening the project")
            if not (isinstance(e, ProjectLocked) and ask_read_only(self, e)):
                return False
            try:  # another program writes it: look without changing anything
                self.session.open_project(root, read_only=True, reason="held")
            except Exception as e2:  # noqa: BLE001
                self.session.report(e2, "Opening the project read-only")
                return False
        ro = " (read-only)" if self.session.read_only else ""
        self.messages.post(
            "info", f"Opened {self.session.project.manifest['name']}{ro}", str(self.session.root)
        )
        remember_recent(self.session.root)
        self._fill_recent()
        self._warn_alignment_size()
        for note in getattr(self.session.project, "notes", []):  # a read-only folder, unsaved log changes
            self.messages.post("warning", "About this project", note)
        notice = None if self.session.read_only else interrupted_notice(self.session.project)
        if notice:
            self.messages.post("warning", "A step was interrupted", notice)
        from lvlmva_desktop.gui.review import remembered_position

        first = self.session.project.first_sample_id()
        stopped = remembered_position(self.session.root)
        if stopped is not None and self.session.project.sample_row(stopped) is not None:
            self.session.select_sample(stopped)  # where the review stopped last time
            self.messages.post("info", "Review", f"You stopped the review at image #{stopped}; N goes on.")
        elif first is not None and self.session.current_sample < 0:
            self.session.select_sample(first)  # the viewer shows an image from the start
        return True

    def _show_segment(self, sample_id: int, segment: int) -> None:
        """Show one segment of an image (from the held-back list): the image, then its row selected."""
        self.session.select_sample(sample_id)
        QTimer.singleShot(0, lambda: self.heatmap.table.select_segment(segment))

    def _fill_recent(self) -> None:
        """File > Open recent: the projects opened last, newest first; a moved folder is greyed out."""
        self.recent_menu.clear()
        folders = recent_projects()
        for folder in folders:
            a = self.recent_menu.addAction(str(folder))
            ok = (folder / "project.json").is_file()
            a.setEnabled(ok)
            a.setToolTip("" if ok else "Not found: the folder was moved or deleted")
            a.triggered.connect(lambda _=False, f=folder: self.open_project(f))
        if not folders:
            self.recent_menu.addAction("(no project opened yet)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear the list", self._clear_recent)

    def _clear_recent(self) -> None:
        QSettings().setValue("recent/projects", [])
        self._fill_recent()

    def _warn_alignment_size(self) -> None:
        """The alignment set asked for (200 by default) against the training images the project has."""
        p = self.session.project
        if p is None:
            return
        n_train = p.count_samples("train")
        n = self.session.pipeline_settings().sampling.n
        if 0 < n_train <= n:
            self.messages.post(
                "warning",
                "The alignment set is as large as the training set",
                f"Method > Sample asks for {n} images and the project has {n_train} training images, so "
                "every training image would be in the alignment set and its choice by entropy means "
                f"nothing. Set a smaller size (about {max(1, n_train // 4)}) in the Training pane's "
                "Alignment set settings, or import more images.",
            )

    # -- drag and drop --------------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802, ANN001 - Qt's name
        if dropped_path(event.mimeData()) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802, ANN001
        path = dropped_path(event.mimeData())
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        # a project folder opens; a folder of class subfolders or a CSV manifest starts a new project
        if (path / "project.json").is_file():
            QTimer.singleShot(0, lambda: self.open_project(path))
        else:
            QTimer.singleShot(0, lambda: self.new_project(path))

    # -- help -----------------------------------------------------------------------------------------------
    @staticmethod
    def _show_modal(dlg) -> None:  # noqa: ANN001 - any QDialog
        """A dialog that does its own work: shown until closed, then freed."""
        dlg.exec()
        dlg.deleteLater()

    def show_help(self, title: str, page: str) -> None:
        from lvlmva_desktop.gui.help import page_window

        self._show_modal(page_window(title.replace("&", ""), page, self))

    def show_shortcuts(self) -> None:
        from lvlmva_desktop.gui.help import HelpWindow, shortcuts_markdown

        actions = [a for menu in self.menuBar().actions() if menu.menu() for a in menu.menu().actions()]
        self._show_modal(HelpWindow("Keyboard shortcuts", shortcuts_markdown(actions), None, self))

    def resume_interrupted(self) -> None:
        self._submit(lambda: workflow.resume_job(self.session, self.messages.post))

    def open_project_dialog(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open project folder")
        if d:
            self.open_project(d)

    def open_demo(self, folder: Path | None = None) -> None:
        from lvlmva_desktop.core.data.demo import default_demo_folder

        folder = Path(folder or default_demo_folder())
        if (folder / "project.json").exists():
            self.open_project(folder)
            return
        self.messages.post(
            "info", "Building the demo project", f"Generating 1,800 skin-lesion images in {folder}"
        )
        self.runner.submit(workflow.demo_job(folder, lambda root: self.open_project(root)))

    def new_project(self, source: Path | None = None) -> None:
        from lvlmva_desktop.gui.dialogs import NewProjectDialog

        dlg = NewProjectDialog(self, source)
        accepted = dlg.exec() == NewProjectDialog.DialogCode.Accepted
        v = dlg.values()
        dlg.deleteLater()
        if not accepted:
            return

        def done(report) -> None:
            if self.open_project(v["folder"]):
                self.messages.post("info", "Import finished", report.summary())

        self.runner.submit(
            workflow.import_job(
                v["folder"], v["name"], v["source"], v["source_kind"], v["image_size"], v["channels"], done
            )
        )

    def import_classifier(self, path: str | None = None, arch: str | None = None) -> None:
        """File > Import a trained classifier: the dialog (file, architecture guessed from the file,
        preprocessing); with ``path`` and ``arch`` given, imported with the default preprocessing."""
        from lvlmva_desktop.gui.import_model import ImportClassifierDialog

        p = self.session.project
        if p is None:
            self.show_error(UserError("Nothing to import into", "Open a project first.", "", "project"))
            return
        preprocess = None
        if path is None or arch is None:
            dlg = ImportClassifierDialog(p.image_size, p.channels, self, path)
            if arch:
                dlg.arch.setCurrentText(arch)
            accepted = dlg.exec() == ImportClassifierDialog.DialogCode.Accepted
            v = dlg.values()
            dlg.deleteLater()
            if not accepted:
                return
            path, arch, preprocess = str(v["path"]), v["arch"], v["preprocess"]
        self._submit(lambda: workflow.import_model_job(self.session, Path(path), arch, preprocess))

    def export_results(self) -> None:
        if self.session.project is None:
            self.show_error(UserError("Nothing to export", "Open a project first.", "", "project"))
            return
        d = QFileDialog.getExistingDirectory(self, "Export the results into this folder")
        if d:
            self.export_to(Path(d))

    def export_to(self, folder: Path) -> list[Path]:
        from lvlmva_desktop.core.store.export import export_results

        try:
            written = export_results(self.session.project, folder)
        except Exception as e:  # noqa: BLE001
            self.session.report(e, "Exporting the results")
            return []
        self.messages.post("info", "Results exported", "\n".join(str(p) for p in written), written)
        return written

    def audit_report(self, folder: Path | None = None) -> Job | None:
        """Ask for a folder and write report.html and report.pdf there, as a job on the main lane."""
        if self.session.project is None:
            self.show_error(UserError("No report to write", "Open a project first.", "", "project"))
            return None
        if folder is None:
            folder = self.ask_report_folder()
            if folder is None:
                return None

        def done(paths: list[Path]) -> None:
            self.last_report = paths[0] if paths else None
            self.act_open_report.setEnabled(self.last_report is not None)
            self.messages.post(
                "info",
                "Audit report written",
                "\n".join(str(p) for p in paths) + "\n(double-click to open)",
                paths,
            )

        return self._submit(lambda: workflow.report_job(self.session, folder, done))

    def ask_report_folder(self) -> Path | None:
        """Where the report goes: a folder to type or pick; a new name is created (the folder dialog alone
        refused one that did not exist yet: "Directory not found")."""
        import time

        default = self.session.root / "reports" / time.strftime("audit-%Y-%m-%d")
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Write the audit report (report.html and report.pdf) into this folder",
            str(default),
            "Folder, created if needed (*)",
        )
        return Path(path) if path else None

    def open_last_report(self) -> bool:
        """Open the report written last in this session with the desktop's program for HTML."""
        from lvlmva_desktop.gui.messages import open_file

        return self.last_report is not None and open_file(self.last_report)

    def verify_audit_log(self) -> bool:
        """Walk the project's audit hash chain; an altered or deleted entry is told as an error."""
        from lvlmva_desktop.core.store.audit import verify_project

        if self.session.project is None:
            self.show_error(UserError("Nothing to verify", "Open a project first.", "", "project"))
            return False
        result = verify_project(self.session.project)
        if result.ok:
            self.messages.post("info", "Audit log intact", "\n".join([result.summary(), *result.warnings]))
        else:
            problems = "\n".join(result.problems)
            self.messages.post_error(
                UserError("The audit log was altered", problems, result.summary(), "audit")
            )
        self._verify_content()
        return result.ok

    def _verify_content(self) -> None:
        """Then the tables and files against what the log recorded, in a job (it hashes every image)."""
        from lvlmva_desktop.core.store.integrity import verify_content

        def done(content) -> None:
            lines = [content.summary()] + [c.line() for c in content.checks]
            if content.ok:
                self.messages.post("info", "Content intact", "\n".join(lines))
            else:
                problems = "\n".join(p for c in content.checks for p in c.problems)
                self.messages.post_error(
                    UserError(
                        "The project's content differs from its audit log",
                        problems,
                        "\n".join(lines),
                        "audit",
                    )  # fmt: skip
                )

        self.runner.submit(
            Job("verify", "Verifying the project's content", verify_content, lane="background", on_done=done)
        )

    # -- the method's steps --------------------------------------------------------------------------------
    def _submit(self, build) -> Job | None:
        try:
            job = build()
        except Exception as e:  # noqa: BLE001 - "train first" and the like, in words
            self.session.report(e, "Starting the step")
            return None
        return self.runner.submit(job)

    def train(self) -> None:
        self.docks["training"].raise_()
        self.training.start_training()

    def sample(self) -> None:
        self._submit(lambda: workflow.sample_job(self.session))

    def explain(self) -> None:
        self._submit(lambda: workflow.explain_job(self.session))

    def critique(
        self, kind: str | None = None, accuracy: float = 0.87, lvlm_options: dict | None = None
    ) -> None:
        if not self._settle_unsaved_descriptions("the critique (it reads the saved ones)"):
            return
        if kind is None:
            from lvlmva_desktop.gui.dialogs import CritiqueDialog

            cfg = self.session.lvlm_config()
            label = (cfg.folder or f"{cfg.model} at {cfg.base_url}") if cfg else None
            from lvlmva_desktop.core.method.pipeline import has_artefact_masks

            has_masks = self.session.project is not None and has_artefact_masks(self.session.project)
            dlg = CritiqueDialog(label, has_masks, self)
            accepted = dlg.exec() == CritiqueDialog.DialogCode.Accepted
            kind, accuracy = dlg.choice()
            lvlm_options = dlg.lvlm_options()
            dlg.deleteLater()
            if not accepted:
                return
        self._submit(lambda: workflow.critique_job(self.session, kind, accuracy, lvlm_options))

    def spot_check(self) -> None:
        from lvlmva_desktop.gui.spot_check import SpotCheckDialog

        self._show_modal(SpotCheckDialog(self.session, self))

    def align(self) -> None:
        self.docks["training"].raise_()
        self.training.start_alignment()

    def evaluate(self) -> None:
        self.docks["results"].raise_()
        self._submit(lambda: workflow.evaluate_job(self.session))

    def cancel_job(self) -> None:
        """Stop the method's running step (chat answers and the viewer have their own Stop)."""
        if not self.runner.cancel("main"):
            self.statusBar().showMessage("No step of the method is running.", 3000)

    def lvlm_settings(self) -> None:
        from lvlmva_desktop.gui.lvlm_dialog import LVLMDialog

        self._show_modal(LVLMDialog(self.session, self.runner, self))

    # -- reactions ----------------------------------------------------------------------------------------
    def _on_changed(self, topic: str) -> None:
        if topic == "project":
            self.runner.drop_other_projects(self.session.root)
            self._update_title()
            self.show_device()
        self._update_actions()

    def _update_title(self) -> None:
        p = self.session.project
        ro = " (read-only)" if self.session.read_only else ""
        self.setWindowTitle(
            f"{p.manifest['name']}{ro} — LVLM-VA Desktop" if p is not None else "LVLM-VA Desktop"
        )

    def step_prerequisites(self) -> dict[QAction, str]:
        """What each step of the Method menu still needs, in words ("" when it can run)."""
        s = self.session
        missing = {a: "" for a in self.method_actions}
        if s.project is None:
            return {a: "Open or create a project first (File menu)." for a in self.method_actions}
        if not s.project.has_samples("train"):
            missing[self.act_train] = "The project has no training images: import images first."
        if s.original_model_id() is None:
            need = "Train or import the original model first (Method > Train)."
            for a in (
                self.act_sample,
                self.act_explain,
                self.act_critique,
                self.act_align,
                self.act_evaluate,
            ):
                missing[a] = need
            return missing
        if s.alignment_set_id() is None:
            missing[self.act_explain] = "Choose the alignment set first (Method > Sample)."
        expl = s.explanation_id()
        if expl is None:
            need = "Explain the alignment set first (Method > Explain)."
            missing[self.act_critique] = missing[self.act_align] = missing[self.act_explain] or need
        elif not s.project.has_verdicts(expl):
            missing[self.act_align] = (
                "No verdicts yet: run the critique (Method > Critique) or give your own."
            )
        return missing

    def _update_actions(self) -> None:
        has_project = self.session.project is not None
        busy = self.runner.is_busy("main")
        writable = has_project and not self.session.read_only  # read-only: another program writes it
        missing = self.step_prerequisites()
        for a in self.method_actions:
            why = missing.get(a, "")
            a.setEnabled(writable and not busy and not why)
            if a.property("base_tip") is None:  # what the step does, as _action wrote it
                a.setProperty("base_tip", a.toolTip())
                a.setProperty("base_status", a.statusTip())
            name = a.text().replace("&", "")
            a.setToolTip(f"{name}: not yet. {why}" if why else a.property("base_tip"))
            a.setStatusTip(f"Not yet: {why}" if why else a.property("base_status"))
        self.act_resume.setEnabled(writable and not busy)
        critiqued = not missing.get(self.act_align, "x") and has_project
        self.act_spot_check.setEnabled(writable and not busy and critiqued)
        self.act_spot_check.setToolTip(
            "Check the critic: a blind spot-check of its verdicts"
            if critiqued
            else "Check the critic: not yet. Run the critique first (Method > Critique)."
        )
        self.act_export.setEnabled(has_project)
        self.act_report.setEnabled(has_project)
        self.act_verify_audit.setEnabled(has_project)
        self.act_import_model.setEnabled(has_project and not busy)
        self.act_cancel.setEnabled(busy)

    def _on_job_started(self, job: Job) -> None:
        if job.lane == "main":
            self.session.flush_settings_log()  # the log shows the settings before the step that used them
        if job.lane != "main":  # the viewer, chat and browser show their own work
            return
        self.job_label.setText(job.title + "…")
        self.job_progress.setValue(0)
        self.job_progress.setFormat("%p%")
        for w in (self.job_label, self.job_progress, self.job_cancel):
            w.setVisible(True)
        self._update_actions()

    def _on_job_progress(self, job: Job, fraction: float, message: str, left: float) -> None:
        if job.lane != "main":
            return
        self.job_progress.setValue(int(fraction * 1000))
        self.job_progress.setFormat(f"%p%  {format_time_left(left)}")
        self.job_label.setText(f"{job.title}: {message}" if message else job.title + "…")

    def _job_ended(self) -> None:
        if not self.runner.is_busy("main"):
            for w in (self.job_label, self.job_progress, self.job_cancel):
                w.setVisible(False)
        self._update_actions()

    def _on_job_finished(self, job: Job, result: object) -> None:
        if job.lane == "main":
            self.statusBar().showMessage(f"{job.title}: done.", 5000)
        if job.kind == "critique":
            self.docks["review"].raise_()  # the verdicts are in: the review queue is what comes next
        self._job_ended()

    def _on_job_message(self, job: Job, text: str) -> None:
        """A job's notice worth keeping: the GPU ran short and the job went on with smaller batches; the step
        will take long on the CPU; the attribution method had to change."""
        from lvlmva_desktop.core.runtime.costs import is_slow_notice
        from lvlmva_desktop.core.runtime.memory import is_memory_notice

        if is_memory_notice(text):
            self.messages.post("warning", f"{job.title}: smaller batches", text)
        elif is_slow_notice(text):
            self.messages.post("warning", f"{job.title}: slow on this computer", text)
        elif text.startswith("DeepLIFT-SHAP cannot explain"):
            self.messages.post("info", f"{job.title}: integrated gradients instead of DeepLIFT-SHAP", text)

    def _on_job_cancelled(self, job: Job) -> None:
        self.messages.post(
            "info", f"{job.title}: cancelled", "Stopped at your request; finished work is kept."
        )
        self._job_ended()

    def show_error(self, error: UserError) -> None:
        self.messages.post_error(error)
        self._job_ended()

    def _on_message_posted(self, level: str, title: str) -> None:
        self.statusBar().showMessage(title, 8000)
        if level == "error":
            self.docks["messages"].show()
            self.docks["messages"].raise_()

    def _on_focus_changed(self, _old: QWidget | None, new: QWidget | None) -> None:
        """Edit > Undo acts on the pane that has the focus (spec editor or verdicts)."""
        for pane in (self.spec_editor, self.heatmap):
            stack = getattr(pane, "undo_stack", None)
            if stack is not None and new is not None and (new is pane or pane.isAncestorOf(new)):
                self.undo_group.setActiveStack(stack)

    # -- view ---------------------------------------------------------------------------------------------
    def set_theme(self, theme: str) -> None:
        apply_theme(QApplication.instance(), theme, self)
        for a in self.theme_group.actions():
            a.setChecked(a.data() == theme)

    def _on_system_scheme_changed(self, *_: object) -> None:
        if current_theme() == "system":
            apply_theme(QApplication.instance(), "system", self)

    def reset_layout(self) -> None:
        self.restoreState(self._default_state)
        for d in self.docks.values():
            d.show()

    def about(self) -> None:
        from lvlmva_desktop import __version__

        QMessageBox.about(
            self,
            "About LVLM-VA Desktop",
            f"<b>LVLM-VA Desktop {__version__}</b><p>Audit and correct a small image classifier with a local "
            "vision-language model (LVLM-aided visual alignment). Runs offline; your data and models never "
            "leave this computer.</p>",
        )

    def _restore_window_state(self) -> None:
        s = QSettings()
        geo, state = s.value("window/geometry"), s.value("window/state")
        if isinstance(geo, QByteArray) and not geo.isEmpty():
            self.restoreGeometry(geo)
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if not self._settle_unsaved_descriptions("quitting"):
            event.ignore()
            return
        if self.runner.is_busy("main"):
            answer = QMessageBox.question(
                self,
                "A step is running",
                f"{self.runner.running('main').title} is still running. Stop it and quit? Finished work is kept.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            )
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Stop jobs, remember the layout, free the LVLM, close the project (idempotent)."""
        s = QSettings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        for timer in self.findChildren(QTimer):  # nothing may start a new job while closing
            timer.stop()
        self.browser.cache.shutdown()
        if self.runner.is_busy():
            self.statusBar().showMessage("Waiting for the running step to stop…")
        self.runner.shutdown(30)
        self.session.release_lvlm()
        self.session.close_project(emit=False)

    def showEvent(self, event) -> None:  # noqa: N802, ANN001
        super().showEvent(event)
        if not self._sized and not QSettings().value("window/state"):
            self._sized = True  # first start: share the width sensibly (later starts restore the user's)
            # before the first show the tabbed docks count as stacked, which clamps the height: size again
            requested = getattr(self, "_requested", None)
            if requested is not None and requested == getattr(self, "_auto_size", None):
                self._fit_to_screen()
            elif requested is not None and self.size() != requested:
                super().resize(requested)
            w = max(self.width(), 800)
            self.resizeDocks(
                [self.docks["browser"], self.docks["chat"]],
                [int(w * 0.24), int(w * 0.36)],
                Qt.Orientation.Horizontal,
            )
            self.resizeDocks([self.docks["messages"]], [64], Qt.Orientation.Vertical)
        # the device needs torch: before it is loaded (start-up), opening the project fills the label in
        if "torch" in sys.modules:
            QTimer.singleShot(0, self.show_device)

    def show_device(self) -> None:
        """The device in the status bar (this imports torch)."""
        self.device_label.setText(f"Device: {self.session.device_label()}")
