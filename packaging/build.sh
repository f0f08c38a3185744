#!/usr/bin/env bash
# Build the packaged program: a one-folder PyInstaller build, dist/lvlmva-desktop/lvlmva-desktop.
#
#   bash packaging/build.sh                    # fresh virtual environment in build/package-venv, then build
#   bash packaging/build.sh --python .venv/bin/python   # build with an environment that has ".[package]"
#   bash packaging/build.sh --out /tmp/pkg     # venv, work files and dist/ under /tmp/pkg instead
#
# The build ends by running the new program's --self-test; the script exits non-zero if the build or the
# self-test fails. It needs the package index (or a pip cache) only for the fresh environment; the program
# it builds never goes online. See docs/packaging.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT
PY=""
while [ $# -gt 0 ]; do  # relative paths are taken from where the script is called
  case "$1" in
    --python) PY=$(command -v "$2" 2>/dev/null || true); [ -n "$PY" ] || { echo "no such python: $2" >&2; exit 2; }
              [[ "$PY" == /* ]] || PY=$PWD/$PY; shift 2 ;;
    --out) OUT=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$ROOT"
t0=$SECONDS
if [ -z "$PY" ]; then
  VENV=$OUT/build/package-venv
  rm -rf "$VENV"
  echo "== a fresh virtual environment in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "$ROOT[package]"
  PY=$VENV/bin/python
fi
echo "== PyInstaller ($("$PY" -m PyInstaller --version)) with $PY"
rm -rf "$OUT/dist/lvlmva-desktop"
"$PY" -m PyInstaller "$ROOT/packaging/lvlmva-desktop.spec" --noconfirm --log-level WARN \
  --distpath "$OUT/dist" --workpath "$OUT/build/pyinstaller"
APP=$OUT/dist/lvlmva-desktop/lvlmva-desktop
echo "== built $APP: $(du -sh "$OUT/dist/lvlmva-desktop" | cut -f1), $(find "$OUT/dist/lvlmva-desktop" -type f | wc -l) files, $((SECONDS - t0)) s"
echo "== the packaged program's self-test"
"$APP" --self-test
