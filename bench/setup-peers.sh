#!/usr/bin/env bash
# Create /work/main/.bench-venv: the virtualenv of the peer frameworks (Quix Streams, faust),
# used only by the benchmark. It is separate from .venv because Quix Streams 3.28 pins
# confluent-kafka < 2.13 and pydantic < 2.14, older than the project's.
#
# Usage: bash bench/setup-peers.sh            (re-creates the venv from bench/requirements-peers.txt)
#        PYTHON=/path/to/python3.11 bash bench/setup-peers.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.bench-venv"
python="${PYTHON:-python3.11}"

"$python" -c 'import sys; assert sys.version_info[:2] >= (3, 11), sys.version' \
    || { echo "need Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }

rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# The top-level packages, pinned; the requirements file pins their dependencies too.
"$venv/bin/pip" install --quiet \
    quixstreams==3.28.1 \
    faust-streaming==0.15.3 \
    aiokafka==0.14.0 \
    confluent-kafka==2.12.2 \
    fastavro==1.13.1 \
    pydantic==2.13.5 \
    -c "$repo/bench/requirements-peers.txt"

"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("quixstreams", "faust-streaming", "aiokafka", "confluent-kafka", "fastavro", "pydantic"):
    print(f"{name} {md.version(name)}")
PY
echo "peers venv ready: $venv"
