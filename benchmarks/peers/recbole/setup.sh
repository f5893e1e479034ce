#!/usr/bin/env bash
# Build benchmarks/.peers-recbole-venv with RecBole for benchmarks/bench_sequential.py, kept
# out of recsight's own environment. Usage: benchmarks/peers/recbole/setup.sh [PYTHON]
# (default python3.11). Safe to re-run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../../.peers-recbole-venv"
python="${1:-python3.11}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip wheel "setuptools<81"
# torch first, alone, so RecBole's requirement is already satisfied by the project's build
"$venv/bin/pip" install --quiet torch==2.13.0
"$venv/bin/pip" install --quiet -r "$here/requirements.txt"
"$venv/bin/python" -c "import recbole, torch, numpy; print('recbole', recbole.__version__, \
'torch', torch.__version__, 'numpy', numpy.__version__)"
