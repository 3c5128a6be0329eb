#!/usr/bin/env bash
# Stop exactly what cluster/local/start.sh started: the pids in STATE_DIR/pids and their children.
#   run: cluster/local/stop.sh [--state-dir ~/.accelsweep/local-cluster]
# Never `ray stop`, which stops every Ray on the machine. Ray workers run in their own process
# groups, so the children are found by walking the process tree before anything is signalled.
set -euo pipefail

state_dir="$HOME/.accelsweep/local-cluster"
while [ $# -gt 0 ]; do
  case "$1" in
    --state-dir) state_dir=$2; shift 2 ;;
    -h|--help) echo "usage: cluster/local/stop.sh [--state-dir DIR]"; exit 0 ;;
    *) echo "stop.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
pid_file="$state_dir/pids"
if [ ! -f "$pid_file" ]; then
  echo "stop.sh: nothing to stop ($pid_file does not exist)"
  exit 0
fi

descendants() {  # descendants PID: PID and every process below it
  local tree; tree=$(ps -A -o pid= -o ppid=)
  local found=" $1 " frontier="$1" next
  while [ -n "$frontier" ]; do
    next=""
    for parent in $frontier; do
      for child in $(awk -v p="$parent" '$2 == p {print $1}' <<< "$tree"); do
        found="$found$child "
        next="$next $child"
      done
    done
    frontier=$next
  done
  echo "$found"
}
alive() { for pid in "$@"; do kill -0 "$pid" 2>/dev/null && echo "$pid"; done; true; }

# Workers first, then the head, then MLflow: the reverse of the start order.
all=""
while read -r name pid; do
  case "$name" in ray-*) expected="ray start" ;; *) expected="$name server" ;; esac
  # -ww: the whole command line, whatever $COLUMNS says (ps cuts it there, and a cut "ray start"
  # would read as a pid that now belongs to something else)
  case "$(ps -ww -o args= -p "$pid" 2>/dev/null)" in  # gone, or the pid now belongs to something else
    *"$expected"*) ;;
    *) echo "$name (pid $pid) already gone"; continue ;;
  esac
  tree=$(descendants "$pid")
  all="$all $tree"
  echo "stopping $name (pid $pid, $(wc -w <<< "$tree") processes)"
  kill -TERM "$pid" 2>/dev/null || true
done < <(tac "$pid_file" 2>/dev/null || tail -r "$pid_file")

for _ in $(seq 30); do
  [ -z "$(alive $all)" ] && break
  sleep 1
done
left=$(alive $all)
if [ -n "$left" ]; then
  echo "stop.sh: still running after 30s, killing: $left" >&2
  kill -KILL $left 2>/dev/null || true
fi
rm -f "$pid_file"
echo "stopped; logs and the MLflow store stay in $state_dir"
