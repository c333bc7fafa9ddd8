#!/usr/bin/env bash
# Builds infinity's environment for benchmarks/serve.py: benchmarks/.venv-infinity (or $INFINITY_VENV).
#
# infinity-emb pins its own FastAPI, transformers and optimum, so it lives apart from retrievekit;
# benchmarks/serve.py starts its server (`infinity_emb v2`) from here, on the same model folder and
# the same CPU threads as `retrievekit serve`, and loads both from one client.
#
#     benchmarks/make_infinity_env.sh
#     .venv/bin/python benchmarks/serve.py
#
# Only package registries are used; no model weights or data are downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${INFINITY_VENV:-benchmarks/.venv-infinity}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet "infinity-emb[server,torch,optimum]"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "transformers", "sentence-transformers", "infinity-emb", "fastapi", "uvicorn"):
    try:
        print(f"{name:>22} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:>22} -")
PY
