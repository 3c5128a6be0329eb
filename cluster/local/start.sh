#!/usr/bin/env bash
# A Ray cluster on this machine (a head node plus worker nodes) and an MLflow tracking server.
#   start: cluster/local/start.sh [--workers 1] [--state-dir ~/.accelsweep/local-cluster]
#   use:   source ~/.accelsweep/local-cluster/env && accelsweep submit search_spaces/quickstart.yaml
#   stop:  cluster/local/stop.sh [--state-dir ~/.accelsweep/local-cluster]
#
# Every process started here is recorded (name and pid) in STATE_DIR/pids; stop.sh stops exactly
# those and their children, never another Ray on the machine (so no `ray stop`).
# Security defaults: the dashboard (and its Jobs API) and MLflow bind 127.0.0.1, and Ray token
# authentication is on (a token is made if none exists). See cluster/README.md before using --host.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: cluster/local/start.sh [options]
  --state-dir DIR       pids, logs and the MLflow store (default ~/.accelsweep/local-cluster)
  --ray-temp-dir DIR    Ray's session files, one folder per node (default /tmp/accelsweep-UID-GCSPORT;
                        keep it short: Ray's socket paths must fit in 107 bytes)
  --workers N           worker nodes besides the head (default 1)
  --head-cpus N         CPUs the head node offers to trials (default 1)
  --worker-cpus N       CPUs each worker node offers (default 1)
  --distinct-ips        give worker node i the loopback address 127.0.0.(i+1), so each node has its
                        own IP (Linux routes 127.0.0.0/8 to loopback; macOS needs `ifconfig lo0 alias`)
  --host ADDR           address the dashboard, Jobs API and MLflow bind (default 127.0.0.1)
  --gcs-port P          Ray's GCS port, what `ray start --address` joins (default 6379)
  --dashboard-port P    dashboard and Jobs API, what `accelsweep submit` talks to (default 8265)
  --client-port P       Ray client server (default 10001)
  --mlflow-port P       MLflow tracking server (default 5000)
Ray token auth: the nodes use RAY_AUTH_TOKEN if set, else the file RAY_AUTH_TOKEN_PATH, else
~/.ray/auth_token; a missing token file is created. Ports 10002-19999 are Ray's worker ports: avoid them.
EOF
}

state_dir="$HOME/.accelsweep/local-cluster"
ray_temp_dir="" workers=1 head_cpus=1 worker_cpus=1 distinct_ips=0 host=127.0.0.1
gcs_port=6379 dashboard_port=8265 client_port=10001 mlflow_port=5000
while [ $# -gt 0 ]; do
  case "$1" in
    --state-dir) state_dir=$2; shift 2 ;;
    --ray-temp-dir) ray_temp_dir=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --head-cpus) head_cpus=$2; shift 2 ;;
    --worker-cpus) worker_cpus=$2; shift 2 ;;
    --distinct-ips) distinct_ips=1; shift ;;
    --host) host=$2; shift 2 ;;
    --gcs-port) gcs_port=$2; shift 2 ;;
    --dashboard-port) dashboard_port=$2; shift 2 ;;
    --client-port) client_port=$2; shift 2 ;;
    --mlflow-port) mlflow_port=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "start.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

mkdir -p "$state_dir"
state_dir=$(cd "$state_dir" && pwd)
if [ -s "$state_dir/pids" ]; then
  echo "start.sh: $state_dir/pids exists: a cluster from this state dir may be running; run cluster/local/stop.sh --state-dir $state_dir first" >&2
  exit 1
fi
if [ "$host" != 127.0.0.1 ] && [ "$host" != localhost ]; then
  echo "start.sh: WARNING: the dashboard, Jobs API and MLflow will listen on $host: anyone who can reach it can submit jobs (with the token) and read or write MLflow (no auth). Read cluster/README.md." >&2
fi
ray_temp_dir=${ray_temp_dir:-/tmp/accelsweep-$(id -u)-$gcs_port}
mkdir -p "$state_dir/logs" "$state_dir/mlartifacts"
: > "$state_dir/pids"

# Token authentication stays on: every node and every job the cluster runs inherits RAY_AUTH_MODE.
export RAY_AUTH_MODE=token
if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
  export RAY_AUTH_TOKEN_PATH="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
  if [ ! -s "$RAY_AUTH_TOKEN_PATH" ]; then
    mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")"
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32), end="")' > "$RAY_AUTH_TOKEN_PATH")
    echo "start.sh: made a new Ray auth token in $RAY_AUTH_TOKEN_PATH"
  fi
fi

set -m  # each background process below leads its own process group, so stop.sh can find its children
launch() {  # launch NAME COMMAND...: start in the background, log to logs/NAME.log, record the pid
  local name=$1; shift
  "$@" </dev/null >"$state_dir/logs/$name.log" 2>&1 &
  echo "$name $!" >> "$state_dir/pids"
}
wait_for() {  # wait_for NAME SECONDS CHECK...: until CHECK succeeds, failing if NAME's process exits
  local name=$1 seconds=$2; shift 2
  local pid; pid=$(awk -v n="$name" '$1 == n {print $2}' "$state_dir/pids")
  for _ in $(seq "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "start.sh: $name exited; its log, $state_dir/logs/$name.log, ends with:" >&2
      tail -n 20 "$state_dir/logs/$name.log" >&2
      return 1
    fi
    sleep 1
  done
  echo "start.sh: $name not ready after ${seconds}s; see $state_dir/logs/$name.log" >&2
  return 1
}
fail() { echo "start.sh: stopping what started" >&2; "$(dirname "$0")/stop.sh" --state-dir "$state_dir" >&2; exit 1; }

# Each node gets its own temp dir: nodes sharing one also share runtime_resources/, and a worker
# node then deletes a job's working directory from under the head when its own trials finish.
# Port 0 lets each node's dashboard agent pick a free port (the fixed default would collide).
# Ray 2.60's own gRPC services (GCS, raylets, object managers, workers) listen on all interfaces
# whatever the flags, and name a node by this machine's routable IP even when told 127.0.0.1:
# token authentication is what guards them (see cluster/README.md).
ray_common=(--block --disable-usage-stats --dashboard-agent-listen-port 0)
launch ray-head ray start --head "${ray_common[@]}" --temp-dir "$ray_temp_dir/node0" --port "$gcs_port" \
  --dashboard-host "$host" --dashboard-port "$dashboard_port" --ray-client-server-port "$client_port" \
  --num-cpus "$head_cpus" --resources '{"accelsweep_node_0": 1}'
wait_for ray-head 90 curl -sf "http://$host:$dashboard_port/api/gcs_healthz" || fail

for ((i = 1; i <= workers; i++)); do
  node_ip=()
  if [ "$distinct_ips" = 1 ]; then node_ip=(--node-ip-address "127.0.0.$((i + 1))"); fi
  launch "ray-worker-$i" ray start --address "127.0.0.1:$gcs_port" "${ray_common[@]}" --temp-dir "$ray_temp_dir/node$i" \
    ${node_ip[@]+"${node_ip[@]}"} \
    --num-cpus "$worker_cpus" --resources "{\"accelsweep_node_$i\": 1}"
  wait_for "ray-worker-$i" 90 grep -q "Ray runtime started" "$state_dir/logs/ray-worker-$i.log" || fail
done

launch mlflow mlflow server --host "$host" --port "$mlflow_port" --workers 1 \
  --backend-store-uri "sqlite:///$state_dir/mlflow.db" \
  --artifacts-destination "$state_dir/mlartifacts" --serve-artifacts
wait_for mlflow 90 curl -sf "http://$host:$mlflow_port/health" || fail

{
  echo "# source this file to use the cluster started by cluster/local/start.sh"
  echo "export RAY_API_SERVER_ADDRESS=http://$host:$dashboard_port"
  echo "export MLFLOW_TRACKING_URI=http://$host:$mlflow_port"
  echo "export RAY_AUTH_MODE=token"
  if [ -n "${RAY_AUTH_TOKEN_PATH:-}" ]; then echo "export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"; fi
  echo "# ray.init / accelsweep run on this machine: RAY_ADDRESS=127.0.0.1:$gcs_port"
} > "$state_dir/env"

echo "Ray head: dashboard and Jobs API at http://$host:$dashboard_port, GCS at 127.0.0.1:$gcs_port"
echo "Ray nodes: head ($head_cpus CPUs) + $workers worker node(s) ($worker_cpus CPUs each); Ray logs in $ray_temp_dir/node*/session_latest/logs"
echo "MLflow: http://$host:$mlflow_port (store: $state_dir/mlflow.db, artifacts: $state_dir/mlartifacts)"
echo "Next: source $state_dir/env && accelsweep submit search_spaces/quickstart.yaml"
echo "Stop: $(dirname "$0")/stop.sh --state-dir $state_dir"
