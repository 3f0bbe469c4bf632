#!/usr/bin/env bash
# Create (if missing) the Python venv used by the models/ tooling and install the
# pinned requirements. Idempotent: re-running only re-checks the pins.
# Usage: models/tools/setup-venv.sh            (venv at $IAT_VENV or /root/.cache/iat/venv)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${IAT_VENV:-/root/.cache/iat/venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$here/requirements.txt"
echo "venv ready: $venv ($("$venv/bin/python" --version))"
