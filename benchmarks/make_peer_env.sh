#!/usr/bin/env bash
# Builds the peers' environment for the benchmarks: benchmarks/.venv-peer (or $PEER_VENV).
#
# The peers pin what the project does not: sentence-transformers' ONNX backend needs optimum-onnx,
# which pins transformers < 4.58; PyLate pins sentence-transformers 5.3.0. Both sides of a
# comparison run in one process, so this environment holds retrievekit (editable, from this
# checkout) beside them:
#
#     benchmarks/make_peer_env.sh
#     benchmarks/.venv-peer/bin/python benchmarks/encode.py
#     benchmarks/.venv-peer/bin/python benchmarks/evaluate.py
#
# FlagEmbedding (the BGE-M3 oracle of the tests) is installed without its dependency list (datasets,
# sentence-transformers, ir-datasets, ... at other pins); what its inference code imports is here.
# PyLate is installed without its hard pins on fast-plaid (whose wheels are built for another torch
# and crash with the CPU torch here); its Stanford PLAID backend (`use_fast=False`) runs on the CPU.
# Only package registries are used; no model weights or data are downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PEER_VENV:-benchmarks/.venv-peer}
source benchmarks/_venv.sh  # the venv, pip, the CPU torch wheel
"$VENV/bin/python" -m pip install --quiet -e ".[onnx,faiss,plaid,sparse,bm25,eval,train]" \
    "sentence-transformers==5.3.0" "transformers>=4.57,<4.58" "optimum-onnx[onnxruntime]==0.1.0" \
    "datasets>=2.20" "accelerate>=0.31" "pandas>=2.2.1" "ujson==5.12.0" "ninja" "scipy"
"$VENV/bin/python" -m pip install --quiet --no-deps "pylate==1.6.0" "fastkmeans==0.5.0" "FlagEmbedding==1.4.2"
"$VENV/bin/python" -m pip install --quiet "peft>=0.17"  # FlagEmbedding imports it at package import
print_versions torch transformers sentence-transformers optimum-onnx onnxruntime pylate FlagEmbedding retrievekit
