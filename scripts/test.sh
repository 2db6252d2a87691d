#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs
# (busybox-static for the test images; iproute2, iptables, conntrack, python3, script, g++, chromium and
# chromium-driver when missing), builds the test images, checks
# formatting and lints, builds every binary and runs every test, including
# the cluster tests against the real Docker engine.
#
# With CI=true a missing Docker engine is a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "checking the Docker engine"
if ! docker info --format 'Docker {{.ServerVersion}} (API {{.ClientInfo.Version}})' 2>/dev/null; then
  if ! docker info >/dev/null 2>&1; then
    echo "error: the Docker engine is not reachable; the cluster tests need it (is dockerd running?)" >&2
    exit 1
  fi
fi

if [ "$(id -u)" != 0 ]; then
  echo "error: run the tests as root: stackd's agent mounts a tmpfs for secrets, and the cluster tests start stackd" >&2
  exit 1
fi

# need COMMAND PACKAGE: installs the Debian package when the command is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "$1 not installed; installing $2 via apt-get" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null 2>&1 || {
    apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null
  }
}

step "system tools the tests use"
need ip iproute2        # network-namespace harness (partition tests)
need iptables iptables  # its FORWARD rule on the test bridge
need nsenter util-linux # one Docker engine per node in its namespace (tests/src/engines.rs)
need g++ g++            # libfuzzer-sys compiles libFuzzer (C++) for the fuzz check
need conntrack conntrack # the agent flushes the UDP flows of a removed endpoint
need python3 python3    # the overlay test's UDP echo, run inside a container's namespace
need age age           # snapshots are age files: the tests open them with the age tool, and it opens ours
need script bsdutils    # the events test draws the progress bars on a pty
need promtool prometheus # /metrics and the alert rules pass `promtool check`
need chromium chromium   # the status page in a real headless browser (tests/tests/status_page.rs)
need chromedriver chromium-driver # drives it over WebDriver
need certutil libnss3-tools # the browser trusts the cluster's CA through an NSS database
need docker-registry docker-registry # the private-registry test runs one of its own (tests/tests/registry.rs)
need htpasswd apache2-utils          # its bcrypt htpasswd file
need openssl openssl                 # its test CA and TLS certificate

step "moto's S3 server for the snapshot tests (a Python venv in the target dir)"
# A real S3-compatible server, started by the S3 test itself (not a mocked client).
tools="$(realpath -m "${CARGO_TARGET_DIR:-target}")/test-tools"
if [ ! -x "$tools/moto/bin/moto_server" ]; then
  python3 -m venv --help >/dev/null 2>&1 || need_pkg=python3-venv
  if [ -n "${need_pkg:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >/dev/null 2>&1 || {
      apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >/dev/null
    }
  fi
  rm -rf "$tools/moto"
  mkdir -p "$tools"
  python3 -m venv "$tools/moto"
  "$tools/moto/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.*'
fi
export STACKD_TEST_MOTO="$tools/moto/bin/moto_server"

step "rustfmt and clippy"
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || echo "warning: rustup could not add rustfmt and clippy" >&2
fi

step "building the test images (tests/images/build.sh)"
bash tests/images/build.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo check of the fuzz targets (fuzz/ is its own workspace)"
cargo check --quiet --manifest-path fuzz/Cargo.toml --bins

step "cargo build --workspace"
cargo build --workspace --quiet

step "cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# One closing line for the whole run: N passed, N failed.
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "${passed} passed, ${failed} failed"
exit "$status"
