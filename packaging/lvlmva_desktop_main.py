"""Entry point of the packaged build (PyInstaller runs this file; the installed package uses app.main).

Before anything else it points the caches that libraries write on their own (fontconfig, matplotlib,
CUDA's kernel cache, torch's compiler) into the temp folder, so that the packaged program writes nothing
outside the project folder, the user's settings folder and the temp folder (docs/packaging.md).
"""

import sys

from lvlmva_desktop.core.runtime.sandbox import redirect_caches

if __name__ == "__main__":
    redirect_caches()
    from lvlmva_desktop.app import main

    sys.exit(main())
