"""The audit report: what changed and why, gathered from the project and proven from its data.

A layer of its own above the LVLM package and the core (import-linter, pyproject.toml): it shows the
pictures the critic saw and the prompts it was given, so it may use both; neither may use it.

    document.py    gathers the report's content from the project and writes it as HTML (and PDF)
    figures.py     the pictures: attribution overlays, thumbnails, representative heat maps (numpy, Pillow)
    pdf.py         the same content laid out as PDF pages
    pdf_layout.py  the PDF's page layout: fonts, tables that break across pages, nothing dropped silently
"""
