"""`python -m lvlmva_desktop.cli ...`: the `lvlmva` command."""

import sys

from lvlmva_desktop.cli.main import main

sys.exit(main())
