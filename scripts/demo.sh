#!/usr/bin/env bash
# `make run`: start `secateurs serve` (SQLite + a local Ray), make a team token, submit the demo
# job (a convnet trained on digits, pruned to half its FLOPs by EagleEye), watch it with a live
# progress bar, fetch the artifacts and print where they are. The server then keeps running in
# the foreground (dashboard and API at the printed URL) until Ctrl-C; DEMO_EXIT=1 stops it at once.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
SECATEURS="$VENV/bin/secateurs"
PY="$VENV/bin/python"
PORT="${SECATEURS_PORT:-8000}"
export SECATEURS_DATA_DIR="${SECATEURS_DATA_DIR:-$HOME/.local/share/secateurs}"
export SECATEURS_URL="http://127.0.0.1:$PORT"
OUT="${DEMO_OUT:-$SECATEURS_DATA_DIR/demo-artifacts}"
LOG="$SECATEURS_DATA_DIR/demo-server.log"
mkdir -p "$SECATEURS_DATA_DIR"

if "$PY" -c "import httpx,sys; sys.exit(0 if httpx.get('$SECATEURS_URL/healthz', timeout=2).status_code == 200 else 1)" 2>/dev/null; then
  echo "secateurs: something already answers on port $PORT; set SECATEURS_PORT to another port" >&2
  exit 2
fi

echo "== starting the server on $SECATEURS_URL (data in $SECATEURS_DATA_DIR, log in $LOG)"
"$SECATEURS" serve --port "$PORT" >"$LOG" 2>&1 &
SERVER=$!
stop() { kill -TERM "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true; }
trap stop EXIT INT TERM

for _ in $(seq 1 120); do
  if "$PY" -c "import httpx,sys; sys.exit(0 if httpx.get('$SECATEURS_URL/healthz', timeout=2).status_code == 200 else 1)" 2>/dev/null; then
    break
  fi
  kill -0 "$SERVER" 2>/dev/null || { echo "secateurs: the server exited; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
  sleep 1
done

echo "== creating a token for team 'demo'"
SECATEURS_TOKEN="$("$SECATEURS" token create --team demo 2>/dev/null | tail -n 1)"
export SECATEURS_TOKEN

SPEC="$SECATEURS_DATA_DIR/demo-job.json"
cat >"$SPEC" <<'JSON'
{
  "model": {"zoo": "convnet"},
  "data": {"name": "digits"},
  "target": {"flops": 0.5},
  "strategy": {"name": "eagleeye", "options": {"n_samples": 16, "top_k": 2, "finetune_steps": 30}},
  "train": {"epochs": 3},
  "finetune": {"max_steps": 600}
}
JSON
echo "== submitting $SPEC"
JOB="$("$SECATEURS" submit "$SPEC")"
echo "job $JOB"
"$SECATEURS" watch "$JOB"
"$SECATEURS" status "$JOB"
rm -rf "$OUT"
"$SECATEURS" fetch "$JOB" --out "$OUT" >/dev/null
echo "== artifacts of job $JOB are in $OUT:"
ls -l "$OUT"
echo
echo "Rebuild the pruned model:  $PY -c \"from pruning.export import load_model; print(load_model('$OUT'))\""
if [ "${DEMO_EXIT:-0}" = "1" ]; then
  exit 0
fi
echo "The server keeps running at $SECATEURS_URL (dashboard at /, API docs at /docs)."
echo "export SECATEURS_URL=$SECATEURS_URL SECATEURS_TOKEN=$SECATEURS_TOKEN   # to use the CLI against it"
echo "Press Ctrl-C to stop it."
wait "$SERVER"
