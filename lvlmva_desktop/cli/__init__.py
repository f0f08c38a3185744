"""The command line (`lvlmva`), the headless twin of the GUI: every pipeline step as a command, scriptable and reproducible.

lvlmva generate isic-like data/isic            # a benchmark data set (CSV manifest + masks)
lvlmva import proj --csv data/isic/manifest.csv --image-size 64 --channels 3
lvlmva describe proj --defaults isic-like      # or --class NAME "text" ...
lvlmva train proj                              # step 1
lvlmva sample proj --n 200                     # step 2
lvlmva explain proj                            # steps 3-4
lvlmva critique proj --critic simulated --verdict-accuracy 0.87   # steps 5-6 (benchmark stand-in)
lvlmva critique proj --critic lvlm --model-dir ~/models/SmolVLM   # steps 5-6 with an LVLM
lvlmva verdict proj --sample 12 --segment 2 --set spurious        # the expert's word
lvlmva align proj                              # steps 7-8
lvlmva evaluate proj                           # step 9
lvlmva run proj                                # all of it, one results JSON
lvlmva report proj --out audit/                # the audit report: report.html and report.pdf
lvlmva spot-check proj --n 40                  # check the critic blind: its accuracy, with an interval

One module per concern: common.py (what every command shares), critic_args.py (the critic chosen on
the command line), steps.py (the method's steps), lvlm.py, audit.py, report.py, recovery.py,
spotcheck.py (their commands), main.py (the parser and main()).
"""

from lvlmva_desktop.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
