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
source benchmarks/_venv.sh  # the venv, pip, the CPU torch wheel
"$VENV/bin/python" -m pip install --quiet "infinity-emb[server,torch,optimum]"
print_versions torch transformers sentence-transformers infinity-emb fastapi uvicorn
