#!/usr/bin/env bash
# Builds stackd and runs its main job: a single-node cluster (manager and
# agent in one process) that deploys stacks/hello.yml, then shows
# `stackctl ps hello`. The node keeps running afterwards; the script says
# how to use and stop it. Safe to run again: it reuses the running node.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
data=${STACKD_DATA_DIR:-$root/.stackd-demo}
listen=${STACKD_LISTEN:-127.0.0.1:4280}

step() { printf '\n==> %s\n' "$*"; }

step "checking the Docker engine"
docker info --format 'Docker {{.ServerVersion}}' || { echo "error: the Docker engine is not reachable (is dockerd running?)" >&2; exit 1; }

step "building stackd and stackctl (release)"
cargo build --release --quiet -p stackd -p stackd-cli
bin=$root/target/release
export PATH="$bin:$PATH"

step "building the example images (no registry is needed)"
bash tests/images/build.sh

step "starting a single-node cluster in $data"
mkdir -p "$data"
pidfile=$data/stackd.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "stackd is already running (pid $(cat "$pidfile"))"
else
  if [ -f "$data/node.json" ]; then
    args=(run --data-dir "$data")
  else
    args=(init --data-dir "$data" --listen "$listen" --name "$(hostname)")
  fi
  nohup stackd "${args[@]}" >>"$data/stackd.log" 2>&1 &
  echo $! >"$pidfile"
  echo "stackd started (pid $!), log: $data/stackd.log"
fi
for _ in $(seq 1 100); do
  [ -f "$data/stackctl.env" ] && break
  sleep 0.2
done
set -a; . "$data/stackctl.env"; set +a
for _ in $(seq 1 100); do
  stackctl node ls >/dev/null 2>&1 && break
  sleep 0.2
done

step "stackctl deploy -c stacks/hello.yml hello --wait"
stackctl deploy -c stacks/hello.yml hello --wait --timeout 2m

step "stackctl ps hello"
stackctl ps hello

step "GET http://127.0.0.1:18080/ (web through the routing mesh)"
answer=""
for _ in $(seq 1 50); do
  answer=$( (exec 3<>/dev/tcp/127.0.0.1/18080 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && tail -n 1 <&3) 2>/dev/null || true)
  [ -n "$answer" ] && break
  sleep 0.2
done
if [ -z "$answer" ]; then
  echo "error: nothing answered on 127.0.0.1:18080 (the routing mesh); see $data/stackd.log" >&2
  exit 1
fi
echo "$answer"

cat <<MSG

The cluster keeps running. To use it from this shell:
  export PATH="$bin:\$PATH"; set -a; . $data/stackctl.env; set +a
  stackctl service ls
  curl http://127.0.0.1:18080/        # web, through the routing mesh (any replica)
  curl http://127.0.0.1:18081/        # the api service's port, bound on its node (mode: host)
To stop it:   kill \$(cat $pidfile)     (containers keep running; 'stackd run --data-dir $data' adopts them)
To clean up:  stackctl stack rm hello
              # the agent stops and removes the containers (up to their 10 s stop grace period):
              while [ -n "\$(docker ps -aq --filter label=io.stackd.stack=hello)" ]; do sleep 1; done
              kill \$(cat $pidfile) && rm -rf $data
MSG
