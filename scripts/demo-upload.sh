#!/usr/bin/env bash
# `make demo-upload`: a user's own network end to end through the service. scripts/demo_net.py
# trains a small CNN that is not in the zoo on digits and exports it as a torch.export program
# (.pt2); this script starts `secateurs serve` (unless SECATEURS_URL and SECATEURS_TOKEN name a
# running server), uploads the program, submits a small uniform job (60% of the FLOPs), watches
# it, fetches the artifacts and runs the returned model.pt2 with torch alone.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
SECATEURS="$VENV/bin/secateurs"
PY="$VENV/bin/python"
export SECATEURS_DATA_DIR="${SECATEURS_DATA_DIR:-$HOME/.local/share/secateurs}"
OUT="${DEMO_OUT:-$SECATEURS_DATA_DIR/demo-upload}"
mkdir -p "$OUT"
healthy() { "$PY" -c "import httpx,sys; sys.exit(0 if httpx.get('$1/healthz', timeout=2).status_code == 200 else 1)" 2>/dev/null; }

if [ -z "${SECATEURS_URL:-}" ] || [ -z "${SECATEURS_TOKEN:-}" ]; then
  PORT="${SECATEURS_PORT:-8001}"
  export SECATEURS_URL="http://127.0.0.1:$PORT"
  if healthy "$SECATEURS_URL"; then
    echo "secateurs: something already answers on port $PORT; set SECATEURS_PORT, or SECATEURS_URL and SECATEURS_TOKEN" >&2
    exit 2
  fi
  echo "== starting the server on $SECATEURS_URL (log in $OUT/server.log)"
  "$SECATEURS" serve --port "$PORT" >"$OUT/server.log" 2>&1 &
  SERVER=$!
  trap 'kill -TERM "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true' EXIT INT TERM
  for _ in $(seq 1 120); do
    healthy "$SECATEURS_URL" && break
    kill -0 "$SERVER" 2>/dev/null || { echo "secateurs: the server exited; see $OUT/server.log" >&2; exit 1; }
    sleep 1
  done
  SECATEURS_TOKEN="$("$SECATEURS" token create --team demo 2>/dev/null | tail -n 1)"
  export SECATEURS_TOKEN
fi

echo "== training and exporting the demo network (scripts/demo_net.py)"
"$PY" scripts/demo_net.py --out "$OUT/digits_net.pt2" --epochs "${DEMO_EPOCHS:-20}"
echo "== uploading $OUT/digits_net.pt2"
MODEL="$("$SECATEURS" upload "$OUT/digits_net.pt2")"
echo "model $MODEL"
cat >"$OUT/job.json" <<JSON
{
  "model": {"upload": $MODEL},
  "data": {"name": "digits"},
  "target": {"flops": 0.6},
  "strategy": {"name": "uniform"},
  "finetune": {"max_steps": 300}
}
JSON
JOB="$("$SECATEURS" submit "$OUT/job.json")"
echo "job $JOB"
"$SECATEURS" watch "$JOB"
"$SECATEURS" status "$JOB"
rm -rf "$OUT/artifacts"
"$SECATEURS" fetch "$JOB" --out "$OUT/artifacts" >/dev/null
echo "== the pruned network, run with torch alone:"
"$PY" -c "import torch; net = torch.export.load('$OUT/artifacts/model.pt2').module(); print('model.pt2 ->', tuple(net(torch.randn(4, 1, 16, 16)).shape))"
ls -l "$OUT/artifacts"
