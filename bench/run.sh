#!/usr/bin/env bash
# Runs a benchmark and writes its results into docs/benchmarks.md.
#   bash bench/run.sh deploy [stackd-bench deploy options]
#   bash bench/run.sh raft     [stackd-bench raft options]
#   bash bench/run.sh failover [stackd-bench failover options]
#   bash bench/run.sh mesh     [stackd-bench mesh options]   (root: network namespaces)
#   bash bench/run.sh rollout  [stackd-bench rollout options] (Docker Swarm on the main engine)
#   bash bench/run.sh node-death [stackd-bench node-death options] (root: network namespaces)
#   bash bench/run.sh hollow   [stackd-bench hollow options]  (1,000 hollow nodes, 100,000 tasks)
#   bash bench/run.sh snapshot [stackd-bench hollow options]  (the same state: snapshot save, inspect, restore)
#   bash bench/run.sh metrics  [stackd-bench metrics options] (the cost of /metrics with 100 tasks)
#   bash bench/run.sh logs     [stackd-bench logs options]    (stackctl logs -f against docker logs -f)
#   bash bench/run.sh autoscale [stackd-bench autoscale options] (a load step of 1× to 5× to the extra replicas serving)
# Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-deploy}; shift || true
target=${CARGO_TARGET_DIR:-target}
case "$what" in
  deploy)
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    exec "$target/release/stackd-bench" deploy "$@" ;;
  raft)
    # The etcd contender: Debian's etcd-server (3.4), installed when missing.
    command -v etcd >/dev/null || [ -x /usr/bin/etcd ] || {
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server
    }
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    exec "$target/release/stackd-bench" raft "$@" ;;
  failover)
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    exec "$target/release/stackd-bench" failover "$@" ;;
  mesh)
    # The harness (stackd-tests) runs target/release/stackd and stackctl;
    # stackd-bench re-executes itself from target/release/mesh-bench/ so
    # that the harness finds them.
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    exec "$target/release/stackd-bench" mesh "$@" ;;
  rollout)
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    exec "$target/release/stackd-bench" rollout "$@" ;;
  node-death)
    # On the multi-engine harness, re-executed from target/release/mesh-bench/ as mesh is.
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    exec "$target/release/stackd-bench" node-death "$@" ;;
  hollow)
    # Many TLS sessions in one process: raise the open-file limit.
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    exec "$target/release/stackd-bench" hollow "$@" ;;
  snapshot)
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    exec "$target/release/stackd-bench" hollow --snapshot "$@" ;;
  metrics)
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    bash tests/images/build.sh >/dev/null
    exec "$target/release/stackd-bench" metrics "$@" ;;
  logs)
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    bash tests/images/build.sh >/dev/null
    exec "$target/release/stackd-bench" logs "$@" ;;
  autoscale)
    cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
    bash tests/images/build.sh >/dev/null
    exec "$target/release/stackd-bench" autoscale "$@" ;;
  *) echo "unknown benchmark $what (known: deploy, raft, failover, mesh, rollout, node-death, hollow, snapshot, metrics, logs, autoscale)" >&2; exit 1 ;;
esac
