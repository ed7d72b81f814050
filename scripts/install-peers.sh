#!/usr/bin/env bash
# The benchmark's optional peer: NVIDIA ModelOpt (FastNAS) beside the CPU torch, installed into
# its own folder (not .venv) without its dependency resolution, which would pull CUDA packages.
# Use it with PYTHONPATH=$PEERS (bench/peers.py imports it only for the fastnas row).
set -euo pipefail
PEERS=${PEERS:-.peers}
PIP=${PIP:-.venv/bin/pip}
"$PIP" install --quiet --target "$PEERS" --no-deps \
  nvidia-modelopt==0.47.0 torchprofile==0.0.4 requests huggingface_hub omegaconf httpx2 pulp rich regex
PYTHONPATH="$PEERS" .venv/bin/python -c "import modelopt.torch.prune" 2>/dev/null
echo "ModelOpt installed in $PEERS: PYTHONPATH=$PEERS .venv/bin/python bench/... --peers fastnas"
