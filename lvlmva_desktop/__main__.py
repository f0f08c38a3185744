import sys

from lvlmva_desktop.app import main

sys.exit(main())
