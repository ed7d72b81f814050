#!/usr/bin/env bash
# The team cluster of docker-compose.yml, started for real on a machine that reaches the Debian
# mirror and a Python package index but no image registry. Run by hand, as root, with a
# Docker engine running (`apt-get install docker.io docker-compose debootstrap`, then `dockerd &`);
# not part of the test suite or CI. It:
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
# docs/cluster.md shows one run. Settings (environment):
#   SECATEURS_API_BIND  host address of the API (default 127.0.0.1:18000)
#   WORK                folder for the wheelhouse and logs (default build/cluster-local)
#   FRESH=1             remove this script's images first, so every stage runs from scratch
#   KEEP=1              leave the cluster running at the end (tear down with the printed command)
#   PIP_EXTRA_INDEX_URL where the host's pip finds the CPU torch wheel when no local copy exists,
#                       e.g. https://download.pytorch.org/whl/cpu
# The whole script is one function, read in full before it runs: editing this file while it
# runs does not change the run.
set -euo pipefail

main() {
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
  # the override's build arguments; set for real in stage 3 (compose reads them on every call)
  export BASE_IMAGE="$PYTHON_IMAGE" PIP_INDEX_URL="" TORCH_INDEX_URL=""
  NICE=(nice -n 10)
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
  COMPOSE+=(-f docker-compose.yml -f docker/local/compose.yml)

  [ "$(id -u)" = 0 ] || die "run as root (debootstrap, docker)"
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
  docker info >/dev/null 2>&1 || die "no Docker engine answers: apt-get install docker.io, then start dockerd"
  "${COMPOSE[@]}" version >/dev/null 2>&1 || die "no docker compose: apt-get install docker-compose"
  [ -x "$VENV/bin/secateurs" ] || die "no $VENV/bin/secateurs: run 'make install' first"
  mkdir -p "$WORK"

  T0=$(date +%s)
  STAGE=""
  STAGE_T=$T0
  TIMES=()
  INDEX_PID=""
  trap cleanup EXIT

  if [ "${FRESH:-0}" = 1 ]; then
    docker rmi -f secateurs:latest secateurs-local/postgres:15 "$PYTHON_IMAGE" "$DEBIAN_IMAGE" 2>/dev/null | wc -l \
      | xargs echo "FRESH=1: removed images and layers:"
    docker image prune -f >/dev/null
  fi

  stage "1. Debian base image ($DEBIAN_IMAGE)"
  if docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
    echo "present: $(docker image inspect -f '{{.Id}}' "$DEBIAN_IMAGE" | cut -c1-19)"
  else
    local rootfs="$WORK/rootfs"
    rm -rf "$rootfs"
    "${NICE[@]}" debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
    tail -n 1 "$WORK/debootstrap.log"
    tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - "$DEBIAN_IMAGE"
    rm -rf "$rootfs"
  fi

  stage "2. Python 3.11 image ($PYTHON_IMAGE)"
  "${NICE[@]}" docker build -q -t "$PYTHON_IMAGE" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
    -f docker/local/python.Dockerfile docker/local 2>&1 | grep -v -i -E 'deprecated|buildx|^\s*$' || true
  docker run --rm "$PYTHON_IMAGE" sh -c 'python --version; pip --version | cut -d" " -f1-2; command -v python'

  stage "3. wheelhouse and local package index"
  local wheels="$WORK/wheels" stamp port
  stamp=$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)  # what the wheelhouse was made for
  if [ "$(cat "$wheels/.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "wheelhouse up to date with pyproject.toml and requirements.lock"
  else
    "${NICE[@]}" "$VENV/bin/pip" wheel -q -w "$wheels" -c requirements.lock torch==2.13.0 'setuptools>=68' wheel . \
      >"$WORK/pip-wheel.log" 2>&1 || { grep -v '^WARNING' "$WORK/pip-wheel.log" | tail -n 20 >&2; die "pip wheel failed"; }
    rm -f "$wheels"/secateurs-*.whl  # the image installs the project from its source
    echo "$stamp" >"$wheels/.stamp"
  fi
  make_index "$wheels" "$WORK/index"
  port=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$VENV/bin/python" -m http.server --bind 127.0.0.1 --directory "$WORK/index" "$port" >"$WORK/index.log" 2>&1 &
  INDEX_PID=$!
  export PIP_INDEX_URL="http://127.0.0.1:$port/simple" TORCH_INDEX_URL="http://127.0.0.1:$port/simple"
  for _ in $(seq 1 50); do curl -fs "$PIP_INDEX_URL/torch/" >/dev/null && break; sleep 0.2; done
  echo "index at $PIP_INDEX_URL"

  stage "4. cluster images (docker compose build)"
  # ray-head, ray-worker and api share one image (secateurs:latest): building it once is enough
  "${NICE[@]}" "${COMPOSE[@]}" build postgres api >"$WORK/build.log" 2>&1 \
    || { tail -n 30 "$WORK/build.log" >&2; die "the build failed (log: $WORK/build.log)"; }
  grep -E '^(Building |Step [0-9]+/[0-9]+ : (FROM|RUN)|Successfully tagged)' "$WORK/build.log" | cut -c1-150
  docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^secateurs'
  kill "$INDEX_PID" 2>/dev/null || true
  INDEX_PID=""

  stage "5. start postgres, ray-head, 2 ray-workers, api"
  "${COMPOSE[@]}" up -d --scale ray-worker=2 2>&1 | grep -E 'done|network|volume|rror' || true
  local i
  for i in $(seq 1 600); do
    curl -fs "$SECATEURS_URL/healthz" >/dev/null && break
    [ "$i" = 600 ] && die "the API did not answer on $SECATEURS_URL in 10 minutes"
    sleep 1
  done
  echo "GET $SECATEURS_URL/healthz -> $(curl -fs "$SECATEURS_URL/healthz")"
  "${COMPOSE[@]}" ps

  stage "6. a tiny job from outside, through $SECATEURS_URL"
  wait_for_workers 2
  show_nodes
  SECATEURS_TOKEN=$("${COMPOSE[@]}" exec -T api secateurs token create --team local 2>/dev/null | tail -n 1)
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
  echo "token for team 'local' made with: ${COMPOSE[*]} exec -T api secateurs token create --team local"
  echo "spec: $(tr -d '\n' <"$SPEC" | tr -s ' ')"
  run_job

  stage "7. scale the workers to 3 and run the job again"
  "${COMPOSE[@]}" up -d --no-recreate --scale ray-worker=3 2>&1 | grep -E 'done|network|volume|rror' || true
  wait_for_workers 3
  show_nodes
  run_job
}

die() {
  echo "cluster-local: $*" >&2
  exit 2
}

stage() {  # stage "name": closes the previous stage's timer and announces the next
  local now
  now=$(date +%s)
  [ -n "$STAGE" ] && TIMES+=("$(printf '%-58s %5ss' "$STAGE" $((now - STAGE_T)))")
  STAGE="$1"
  STAGE_T=$now
  [ -n "$1" ] && echo && echo "== [$(date -u +%H:%M:%S)] $1"
  return 0
}

cleanup() {
  local rc=$?
  [ -n "$INDEX_PID" ] && kill "$INDEX_PID" 2>/dev/null
  if [ "$rc" != 0 ] && [ -n "$("${COMPOSE[@]}" ps -q 2>/dev/null)" ]; then
    echo "== failed (exit $rc): the services' last log lines" >&2
    "${COMPOSE[@]}" logs --no-color --tail 20 >&2 || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    echo "KEEP=1: the cluster keeps running; stop it with: COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME ${COMPOSE[*]} down -v"
  else
    stage "8. tear down"
    "${COMPOSE[@]}" down -v --remove-orphans 2>&1 | grep -v -E '\.\.\. $|^Stopping|^Removing secateurs' || true
    echo "containers left in project $COMPOSE_PROJECT_NAME: $(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | wc -l)"
  fi
  stage ""
  echo
  echo "== stage timings"
  printf '%s\n' "${TIMES[@]}"
  echo "total $(($(date +%s) - T0))s, exit $rc"
}

make_index() {  # make_index WHEELS INDEX: a PEP 503 index, simple/<name>/ linking to the wheels
  "$VENV/bin/python" - "$1" "$2" <<'PY'
import os, re, shutil, sys
from pathlib import Path

wheels, index = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
shutil.rmtree(index, ignore_errors=True)
files = sorted(wheels.glob("*.whl"))
for whl in files:
    name = re.sub(r"[-_.]+", "-", whl.name.split("-")[0]).lower()
    (index / "simple" / name).mkdir(parents=True, exist_ok=True)
    os.symlink(whl, index / "simple" / name / whl.name)
print(f"{len(files)} wheels, {sum(p.stat().st_size for p in files) >> 20} MiB")
PY
}

ray_nodes() {  # hostname, node id, role and CPUs of each live Ray node, as the head sees them
  "${COMPOSE[@]}" exec -T ray-head python - <<'PY'
import ray
ray.init(address="auto", log_to_driver=False, logging_level="ERROR")
for n in sorted(ray.nodes(), key=lambda n: n["NodeManagerHostname"]):
    if n["Alive"]:
        role = "head" if "node:__internal_head__" in n["Resources"] else "node"
        print(n["NodeManagerHostname"], n["NodeID"], role, int(n["Resources"].get("CPU", 0)), sep="\t")
PY
}

show_nodes() {  # each Ray node with the container it is (a container's hostname is its id)
  local names host node role cpus
  names=$(docker ps --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" --format '{{.ID}} {{.Names}}')
  printf '%-30s %-13s %-19s %-5s %s\n' container hostname "ray node id" role CPUs
  ray_nodes | while IFS=$'\t' read -r host node role cpus; do
    printf '%-30s %-13s %-19s %-5s %s\n' "$(awk -v h="$host" 'index(h, $1) == 1 {print $2}' <<<"$names")" \
      "$host" "${node:0:16}.." "$role" "$cpus"
  done
}

wait_for_workers() {  # wait_for_workers N: until Ray has N live nodes with CPUs
  local _
  for _ in $(seq 1 300); do
    [ "$(ray_nodes 2>/dev/null | awk -F'\t' '$4 > 0' | wc -l)" -ge "$1" ] && return 0
    sleep 1
  done
  die "Ray did not see $1 workers"
}

run_job() {  # submit SPEC with the CLI, watch it, then say which container evaluated each candidate
  local job containers
  job=$("$VENV/bin/secateurs" submit "$SPEC" 2>/dev/null)
  echo "\$ secateurs submit $SPEC   # SECATEURS_URL=$SECATEURS_URL -> job $job"
  "$VENV/bin/secateurs" watch "$job" --poll 2 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -n 1
  "$VENV/bin/secateurs" status "$job" | grep -E 'accuracy|flops'
  curl -fs -H "Authorization: Bearer $SECATEURS_TOKEN" "$SECATEURS_URL/v1/jobs/$job/candidates" >"$WORK/candidates-$job.json"
  curl -fs -H "Authorization: Bearer $SECATEURS_TOKEN" "$SECATEURS_URL/v1/jobs/$job/events" >"$WORK/events-$job.json"
  containers=$(docker ps --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --format '{{.ID}}={{.Names}}' | tr '\n' ' ')
  "$VENV/bin/python" - "$WORK/candidates-$job.json" "$WORK/events-$job.json" "$containers" <<'PY'
import collections, json, sys

cands, events = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
names = dict(w.split("=") for w in sys.argv[3].split())  # container id (its hostname) -> name
workers = {h: n for h, n in names.items() if "ray-worker" in n}
print("GET /v1/jobs/ID/candidates, each candidate's meta:")
print(f"{'seq':>4}  {'phase':<9} {'score':>6}  {'worker_host':<13} {'worker_node':<19} {'pid':>4}  container")
for c in cands:
    m = c.get("meta") or {}
    host = str(m.get("worker_host", "-"))
    print(f"{c['id']:>4}  {c['phase']:<9} {c['score']:>6.3f}  {host:<13} {str(m.get('worker_node', '-'))[:16] + '..':<19} "
          f"{m.get('worker_pid', '-'):>4}  {workers.get(host, 'NOT A RAY WORKER')}")
hosts = collections.Counter(str((c.get("meta") or {}).get("worker_host")) for c in cands)
print(f"{len(cands)} candidates on {len(hosts)} hosts ({', '.join(f'{workers.get(h, h)} x{n}' for h, n in sorted(hosts.items()))}); "
      f"all on ray-worker containers: {'yes' if set(hosts) <= set(workers) else 'NO'}")
for e in events:  # which scheduler (API process) claimed and finished the job, where recorded
    sched = (e.get("data") or {}).get("scheduler")
    if sched:
        print(f"event {e['id']} {e['kind']}: scheduler {sched} = {names.get(sched.get('host'), '?')}")
PY
}

main "$@"
