"""The project store: one project folder, its database and files, split by what they hold (see project.py)."""
