#!/usr/bin/env bash
# Build benchmarks/.peers-venv with the peer libraries (implicit, Surprise, Cornac), kept out of
# recsight's own environment. Usage: benchmarks/peers/setup.sh [PYTHON] (default python3.11).
# Safe to re-run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../.peers-venv"
python="${1:-python3.11}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip wheel
# If any peer pulls torch, it must be the project's build: pin it as a constraint.
"$venv/bin/pip" install --quiet -r "$here/requirements.txt" -c "$here/constraints.txt"
"$venv/bin/python" -c "import implicit, surprise, cornac; print('peers ready: implicit', \
implicit.__version__, 'surprise', surprise.__version__, 'cornac', cornac.__version__)"
