#!/usr/bin/env bash
# The team cluster of docker-compose.yml, started for real on a machine that reaches the Debian
# mirror and a Python package index but no image registry. Run by hand, as root, with a
# Docker engine running (`dockerd &`); not part of the test suite or CI. It:
#   1. makes a Debian base image with debootstrap and `docker import` (once; kept),
#   2. builds a Python 3.11 image on it (docker/local/python.Dockerfile: stands in for python:3.11-slim),
#   3. fills a wheelhouse on the host (pip wheel, pinned by requirements.lock) and serves it as
#      a package index on 127.0.0.1,
#   4. builds the cluster's images with docker compose (Dockerfile with BASE_IMAGE / PIP_INDEX_URL /
#      TORCH_INDEX_URL pointing at those; PostgreSQL from docker/local/postgres.Dockerfile),
#   5. starts postgres, the Ray head, 2 Ray workers and the API (published on 127.0.0.1 only),
#   6. submits a tiny job through the published port with the `secateurs` CLI and shows, from
#      its candidates' metadata, which Ray node and container evaluated each one,
#   7. scales the workers to 3 and runs the job again (its evaluations spread over 3 workers),
#   8. tears everything down (containers, networks, volumes; the images stay for the next run).
# Output: docs/cluster.md shows one run. Settings (environment):
#   SECATEURS_API_BIND  host address of the API (default 127.0.0.1:18000)
#   WORK                folder for the wheelhouse and the rootfs (default build/cluster-local)
#   KEEP=1              leave the cluster running at the end (tear down with the printed command)
#   PIP_EXTRA_INDEX_URL where the host's pip finds the CPU torch wheel when no local copy exists,
#                       e.g. https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
WORK="${WORK:-build/cluster-local}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_IMAGE=secateurs-local/debian:bookworm
PYTHON_IMAGE=secateurs-local/python:3.11
export SECATEURS_API_BIND="${SECATEURS_API_BIND:-127.0.0.1:18000}"
export RAY_DASHBOARD_BIND="${RAY_DASHBOARD_BIND:-127.0.0.1:18265}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-secateurs-local}"
export SECATEURS_URL="http://$SECATEURS_API_BIND"
NICE=(nice -n 10)

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
COMPOSE+=(-f docker-compose.yml -f docker/local/compose.yml)

die() { echo "cluster-local: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (debootstrap, docker)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
docker info >/dev/null 2>&1 || die "no Docker engine answers: apt-get install docker.io, then start dockerd"
"${COMPOSE[@]}" version >/dev/null 2>&1 || die "no docker compose: apt-get install docker-compose"
[ -x "$VENV/bin/secateurs" ] || die "no $VENV/bin/secateurs: run 'make install' first"
mkdir -p "$WORK"

T0=$(date +%s)
STAGE_T=$T0
TIMES=()
stage() {  # stage "name": closes the previous stage's timer and announces the next
  local now
  now=$(date +%s)
  [ -n "${STAGE:-}" ] && TIMES+=("$(printf '%-56s %5ss' "$STAGE" $((now - STAGE_T)))")
  STAGE="$1"
  STAGE_T=$now
  [ -n "$1" ] && echo && echo "== [$(date -u +%H:%M:%S)] $1"
  return 0
}

INDEX_PID=""
cleanup() {
  local rc=$?
  [ -n "$INDEX_PID" ] && kill "$INDEX_PID" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then
    echo "KEEP=1: the cluster keeps running; stop it with: COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME ${COMPOSE[*]} down -v"
  else
    stage "tear down"
    "${COMPOSE[@]}" down -v --remove-orphans 2>&1 | tail -n 3
    echo "containers left in project $COMPOSE_PROJECT_NAME: $(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | wc -l)"
  fi
  stage ""
  echo
  echo "== stage timings"
  printf '%s\n' "${TIMES[@]}"
  echo "total $(($(date +%s) - T0))s, exit $rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
stage "1. Debian base image ($DEBIAN_IMAGE)"
if docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
  echo "present: $(docker image inspect -f '{{.Id}}' "$DEBIAN_IMAGE" | cut -c1-19)"
else
  ROOTFS="$WORK/rootfs"
  rm -rf "$ROOTFS"
  "${NICE[@]}" debootstrap --variant=minbase bookworm "$ROOTFS" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  tar -C "$ROOTFS" -c . | docker import -c 'CMD ["bash"]' - "$DEBIAN_IMAGE"
  rm -rf "$ROOTFS"
fi

stage "2. Python 3.11 image ($PYTHON_IMAGE)"
"${NICE[@]}" docker build -q -t "$PYTHON_IMAGE" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
  -f docker/local/python.Dockerfile docker/local
docker run --rm "$PYTHON_IMAGE" sh -c 'python --version; pip --version | cut -d" " -f1-2'

stage "3. wheelhouse and local package index"
WHEELS="$WORK/wheels"
"${NICE[@]}" "$VENV/bin/pip" wheel -q -w "$WHEELS" -c requirements.lock torch==2.13.0 'setuptools>=68' wheel . \
  >"$WORK/pip-wheel.log" 2>&1 || { grep -v '^WARNING' "$WORK/pip-wheel.log" | tail -n 20 >&2; die "pip wheel failed"; }
rm -f "$WHEELS"/secateurs-*.whl  # the image installs the project from its source
# A PEP 503 index: simple/<normalized name>/ holding links to the wheels; http.server lists it.
"$VENV/bin/python" - "$WHEELS" "$WORK/index" <<'PY'
import os, re, shutil, sys
from pathlib import Path

wheels, index = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
shutil.rmtree(index, ignore_errors=True)
for whl in sorted(wheels.glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", whl.name.split("-")[0]).lower()
    (index / "simple" / name).mkdir(parents=True, exist_ok=True)
    os.symlink(whl, index / "simple" / name / whl.name)
print(f"{len(list(wheels.glob('*.whl')))} wheels, {sum(p.stat().st_size for p in wheels.glob('*.whl')) >> 20} MiB")
PY
PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VENV/bin/python" -m http.server --bind 127.0.0.1 --directory "$WORK/index" "$PORT" >"$WORK/index.log" 2>&1 &
INDEX_PID=$!
export BASE_IMAGE="$PYTHON_IMAGE" PIP_INDEX_URL="http://127.0.0.1:$PORT/simple" TORCH_INDEX_URL="http://127.0.0.1:$PORT/simple"
for _ in $(seq 1 50); do curl -fs "$PIP_INDEX_URL/torch/" >/dev/null && break; sleep 0.2; done
echo "index at $PIP_INDEX_URL"

stage "4. cluster images (docker compose build)"
# ray-head, ray-worker and api share one image (secateurs:latest): building it once is enough
"${NICE[@]}" "${COMPOSE[@]}" build postgres api >"$WORK/build.log" 2>&1 \
  || { tail -n 30 "$WORK/build.log" >&2; die "the build failed (log: $WORK/build.log)"; }
grep -E '^(Building |Step [0-9]+/[0-9]+ : (FROM|RUN)|Successfully tagged)' "$WORK/build.log" | cut -c1-150
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^(secateurs|secateurs-local/)'
kill "$INDEX_PID" 2>/dev/null || true
INDEX_PID=""

stage "5. start postgres, ray-head, 2 ray-workers, api"
"${COMPOSE[@]}" up -d --scale ray-worker=2 2>&1 | tail -n 8
for i in $(seq 1 180); do
  curl -fs "$SECATEURS_URL/healthz" >/dev/null && break
  [ "$i" = 180 ] && { "${COMPOSE[@]}" logs --tail 30 api >&2; die "the API did not answer on $SECATEURS_URL"; }
  sleep 1
done
echo "GET $SECATEURS_URL/healthz -> $(curl -fs "$SECATEURS_URL/healthz")"
"${COMPOSE[@]}" ps

# Each container with its Docker name, hostname and Ray node id, as Ray sees the cluster.
ray_nodes() {
  "${COMPOSE[@]}" exec -T ray-head python - <<'PY'
import ray
ray.init(address="auto", log_to_driver=False, logging_level="ERROR")
for n in sorted(ray.nodes(), key=lambda n: n["NodeManagerHostname"]):
    if n["Alive"]:
        role = "head" if n["Resources"].get("node:__internal_head__") else "node"
        print(n["NodeManagerHostname"], n["NodeID"], role, int(n["Resources"].get("CPU", 0)), sep="\t")
PY
}
show_nodes() {
  local names
  names=$(docker ps --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" --format '{{.ID}} {{.Names}}')
  printf '%-28s %-14s %-18s %-5s %s\n' container hostname "ray node id" role CPUs
  ray_nodes | while IFS=$'\t' read -r host node role cpus; do
    printf '%-28s %-14s %-18s %-5s %s\n' "$(awk -v h="$host" 'index($1, h) == 1 || index(h, $1) == 1 {print $2}' <<<"$names")" \
      "$host" "${node:0:16}.." "$role" "$cpus"
  done
}

wait_for_workers() {  # wait_for_workers N: until Ray has N alive nodes with CPUs
  for _ in $(seq 1 120); do
    [ "$(ray_nodes 2>/dev/null | awk -F'\t' '$4 > 0' | wc -l)" -ge "$1" ] && return 0
    sleep 1
  done
  die "Ray did not see $1 workers"
}

stage "6. a tiny job from outside, through $SECATEURS_URL"
wait_for_workers 2
show_nodes
SECATEURS_TOKEN=$("${COMPOSE[@]}" exec -T api secateurs token create --team local | tail -n 1)
export SECATEURS_TOKEN
SPEC="$WORK/job.json"
cat >"$SPEC" <<'JSON'
{
  "model": {"zoo": "convnet"},
  "data": {"name": "digits"},
  "target": {"flops": 0.5},
  "strategy": {"name": "eagleeye", "options": {"n_samples": 6, "top_k": 1, "finetune_steps": 10}},
  "search": {"batch_size": 6},
  "train": {"epochs": 1},
  "finetune": {"max_steps": 30},
  "onnx": false
}
JSON
echo "spec: $(tr -d '\n' <"$SPEC" | tr -s ' ')"

# run_job: submit the spec with the CLI, watch it to the end, then list which container
# evaluated each candidate (the candidates' meta: worker_host, worker_node, worker_pid).
run_job() {
  local job
  job=$("$VENV/bin/secateurs" submit "$SPEC")
  echo "$VENV/bin/secateurs submit $SPEC -> job $job"
  "$VENV/bin/secateurs" watch "$job" --poll 2 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -n 2
  "$VENV/bin/secateurs" status "$job"
  curl -fs -H "Authorization: Bearer $SECATEURS_TOKEN" "$SECATEURS_URL/v1/jobs/$job/candidates" >"$WORK/candidates-$job.json"
  "$VENV/bin/python" - "$WORK/candidates-$job.json" <<'PY'
import collections, json, sys

body = json.load(open(sys.argv[1]))
cands = body["candidates"] if isinstance(body, dict) else body
print(f"{'candidate':>9}  {'phase':<9} {'score':>6}  {'worker_host':<13} {'worker_node':<18} pid")
for c in cands:
    m = c.get("meta") or {}
    node = str(m.get("worker_node", "-"))
    print(f"{c.get('seq', c.get('id')):>9}  {str(c.get('phase')):<9} {c.get('score', 0):>6.3f}  "
          f"{str(m.get('worker_host', '-')):<13} {node[:16] + '..':<18} {m.get('worker_pid', '-')}")
hosts = collections.Counter(str((c.get("meta") or {}).get("worker_host")) for c in cands)
print(f"{len(cands)} candidates evaluated on {len(hosts)} hosts: " + ", ".join(f"{h} x{n}" for h, n in sorted(hosts.items())))
PY
}
run_job

stage "7. scale the workers to 3 and run the job again"
"${COMPOSE[@]}" up -d --no-recreate --scale ray-worker=3 2>&1 | tail -n 6
wait_for_workers 3
show_nodes
run_job

if [ "${KEEP:-0}" != 1 ]; then
  echo
  echo "API log (last lines):"
  "${COMPOSE[@]}" logs --no-color --tail 5 api 2>&1 | cut -c1-200
fi
