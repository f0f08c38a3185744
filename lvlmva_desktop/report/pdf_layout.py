"""Page layout for the PDF audit report (fpdf2): fonts, running header, headings, boxes and tables.

DejaVu fonts are used when the system has them (most languages in the texts); otherwise the PDF core
fonts, which only know Latin-1, and texts are transliterated. A character no font can draw becomes "?",
so nothing disappears from the page without a trace. report/pdf.py lays out the sections with these.
"""

from __future__ import annotations

import io
import os
import unicodedata

from fpdf import FPDF, FontFace
from fpdf.enums import XPos, YPos

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF")
INK, MUTED, ACCENT = (29, 35, 48), (91, 100, 115), (34, 81, 168)
SOFT, LINE = (240, 243, 247), (200, 206, 214)
OK, BAD, WARN = (27, 122, 61), (179, 38, 30), (138, 90, 0)
VERDICT_INK = {"spurious": BAD, "relevant": OK, "undecided": WARN}
_ASCII = {"–": "-", "—": "-", "→": "->", "…": "...", "×": "x", "’": "'", "“": '"', "”": '"'}


def _find_fonts() -> dict[str, str] | None:
    names = {
        "": "DejaVuSans.ttf",
        "B": "DejaVuSans-Bold.ttf",
        "I": "DejaVuSans-Oblique.ttf",
        "mono": "DejaVuSansMono.ttf",
        "cond": "DejaVuSansCondensed.ttf",
        "condB": "DejaVuSansCondensed-Bold.ttf",
    }
    for d in FONT_DIRS:
        paths = {k: os.path.join(d, v) for k, v in names.items()}
        if all(os.path.isfile(p) for p in paths.values()):
            return paths
    return None


#: lines a table cell may take before its text is cut (a row must fit on one page)
MAX_CELL_LINES = 30


def fit_cell(text: object, width_mm: float, size_pt: float) -> str:
    """A cell's text cut to about MAX_CELL_LINES lines of its column (a 3,000-character label or 400 class
    names in one cell would make a row taller than a page), saying how much was cut; the HTML report has
    every text whole."""
    s = "" if text is None else str(text)
    per_line = max(8, int(width_mm / (size_pt * 0.3528 * 0.5)))  # an average character is about half an em
    limit = per_line * MAX_CELL_LINES
    if len(s) <= limit:
        return s
    cut = limit - 80
    return f"{s[:cut]}… [{len(s) - cut:,} more characters: the whole text is in report.html]"


class ReportPDF(FPDF):
    """A4 pages with a running header (project, page x of y) and fonts chosen once."""

    def __init__(self, project_name: str, generated: str, unicode_fonts: bool | None = None) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.project_name, self.generated = project_name, generated
        fonts = _find_fonts() if unicode_fonts is not False else None
        self.unicode = fonts is not None
        if fonts:
            self.add_font("body", "", fonts[""])
            self.add_font("body", "B", fonts["B"])
            self.add_font("body", "I", fonts["I"])
            self.add_font("mono", "", fonts["mono"])
            self.add_font("cond", "", fonts["cond"])
            self.add_font("cond", "B", fonts["condB"])
            self.body, self.mono, self.cond = "body", "mono", "cond"
        else:
            self.body, self.mono, self.cond = "helvetica", "courier", "helvetica"
        self.set_margins(16, 18, 16)
        self.set_auto_page_break(True, margin=16)
        self.set_title(f"Audit report: {self.t(project_name)}")
        self.set_creator("LVLM-VA Desktop")
        self.set_text_color(*INK)

    # -- text ---------------------------------------------------------------------------------------------
    def t(self, text: object) -> str:
        """Text the fonts can draw: a character they lack becomes its closest Latin-1 form (core fonts) or
        "?", so that nothing disappears from the page without a trace."""
        s = "" if text is None else str(text)
        if self.unicode:
            cmap = self.fonts["body"].cmap
            return "".join(ch if ord(ch) in cmap or ch in "\n\t" else "?" for ch in s)
        out = []
        for ch in s:
            ch = _ASCII.get(ch, ch)
            if all(ord(c) < 256 for c in ch):
                out.append(ch)
                continue
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            out.append(base if base and all(ord(c) < 256 for c in base) else "?")
        return "".join(out)

    @property
    def width(self) -> float:
        return self.w - self.l_margin - self.r_margin

    def header(self) -> None:
        if self.page_no() == 1:
            return
        self.set_font(self.body, "", 7.5)
        self.set_text_color(*MUTED)
        self.set_y(8)
        self.cell(self.width / 2, 5, self.t(f"Audit report: {self.project_name}"), align="L")
        self.cell(
            self.width / 2, 5, self.t(f"{self.generated}  ·  page {self.page_no()} of {{nb}}"), align="R"
        )
        self.set_draw_color(*LINE)
        self.line(self.l_margin, 13.5, self.w - self.r_margin, 13.5)
        self.set_text_color(*INK)
        self.set_y(18)

    def heading(self, number: int, title: str, keep: float = 60) -> None:
        """A numbered section title (and bookmark); ``keep`` mm of what follows must fit under it."""
        if self.get_y() > self.h - keep:  # a heading never sits alone at the foot of a page
            self.add_page()
        self.start_section(self.t(title), level=0)
        self.ln(3)
        self.set_font(self.body, "B", 14)
        self.set_text_color(*ACCENT)
        self.cell(0, 8, self.t(f"{number}. {title}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(*ACCENT)
        self.set_line_width(0.5)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.set_line_width(0.2)
        self.set_text_color(*INK)
        self.ln(3)

    def subheading(self, title: str) -> None:
        if self.get_y() > self.h - 45:
            self.add_page()
        self.ln(2)
        self.set_font(self.body, "B", 10.5)
        self.multi_cell(0, 5.5, self.t(title), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def para(self, text: str, size: float = 9, colour: tuple = INK, style: str = "") -> None:
        self.set_font(self.body, style, size)
        lines = self.multi_cell(0, size * 0.5, self.t(text), align="L", dry_run=True, output="LINES")
        if len(lines) <= 4 and self.get_y() + len(lines) * size * 0.5 > self.page_break_trigger:
            self.add_page()  # a short paragraph is not split across pages
        self.set_text_color(*colour)
        self.multi_cell(0, size * 0.5, self.t(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(*INK)
        self.ln(1.5)

    def note(self, text: str) -> None:
        self.para(text, 8, MUTED)

    def boxed(self, text: str, colour: tuple, size: float = 9) -> None:
        """A remark that must not be missed: coloured bar on the left, soft background."""
        self.set_font(self.body, "", size)
        lines = self.multi_cell(
            self.width - 6, size * 0.5, self.t(text), align="L", dry_run=True, output="LINES"
        )
        height = len(lines) * size * 0.5 + 4
        if self.get_y() + height > self.page_break_trigger:
            self.add_page()
        y = self.get_y()
        self.set_fill_color(*SOFT)
        self.rect(self.l_margin, y, self.width, height, style="F")
        self.set_fill_color(*colour)
        self.rect(self.l_margin, y, 1.6, height, style="F")
        self.set_xy(self.l_margin + 4, y + 2)
        self.multi_cell(
            self.width - 6, size * 0.5, self.t(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        self.set_y(y + height + 2)

    def table_of(
        self,
        rows: list[list],
        widths: tuple[float, ...],
        size: float = 8,
        mono_cols: tuple[int, ...] = (),
        right_cols: tuple[int, ...] = (),
        heading: bool = True,
    ) -> None:
        """A table across the page; its heading row repeats on every page it spans.

        A cell is text, or a (text, FontFace) pair, or a dict {"img": png bytes}."""
        if not rows:
            return
        self.set_font(self.cond, "", size)
        self.set_fill_color(255, 255, 255)  # cells take the current fill colour where they are not striped
        head = FontFace(family=self.cond, emphasis="B", fill_color=SOFT, size_pt=size)
        with self.table(
            col_widths=widths,
            width=self.width * sum(widths) / 100 if sum(widths) < 100 else self.width,
            align="LEFT",
            text_align="LEFT",
            v_align="TOP",
            line_height=size * 0.47,
            padding=(0.9, 1.2, 0.9, 1.2),
            headings_style=head,
            first_row_as_headings=heading,
            repeat_headings=1,
            borders_layout="HORIZONTAL_LINES",
            cell_fill_color=(248, 249, 251),
            cell_fill_mode="ROWS",
        ) as table:
            for i, r in enumerate(rows):
                row = table.row()
                for j, c in enumerate(r):
                    style = None
                    if isinstance(c, dict):
                        row.cell(img=io.BytesIO(c["img"]), img_fill_width=True)
                        continue
                    if isinstance(c, tuple):
                        c, style = c
                    if j in mono_cols and (i > 0 or not heading):
                        style = FontFace(
                            family=self.mono, size_pt=size - 1, color=(style or FontFace()).color
                        )
                    align = "RIGHT" if j in right_cols else None
                    width_mm = self.width * widths[j] / 100 if j < len(widths) else self.width
                    row.cell(self.t(fit_cell(c, width_mm, size)), style=style, align=align)
        self.ln(2)

    def kv(self, pairs: list[tuple[str, object]], key_width: float = 30, mono_values: bool = False) -> None:
        self.table_of(
            [[k, "" if v is None else v] for k, v in pairs],
            (key_width, 100 - key_width),
            size=8.5,
            mono_cols=(1,) if mono_values else (),
            heading=False,
        )
