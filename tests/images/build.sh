#!/usr/bin/env bash
# Build the local Docker images used by the stackd test-suite.
#
# No registry is reachable in the test environment, so every image is built
# FROM scratch around Debian's statically linked busybox (package
# busybox-static).
#
# Images:
#   stackd-test/web:1       httpd serving "web 1" on :8080   (web/Dockerfile)
#   stackd-test/web:2       httpd serving "web 2" on :8080   (web/Dockerfile)
#   stackd-test/busybox:1   plain busybox, CMD sh            (busybox/Dockerfile)
#   stackd-test/web-health:1  web with its own HEALTHCHECK (healthy once
#                           /tmp/ready exists)               (web-health/Dockerfile)
#   stackd-test/burn:1      web whose /cgi-bin/burn?n=N burns CPU (a shell
#                           loop of N iterations) per request (burn/Dockerfile)
#
# Idempotent: each image carries LABEL io.stackd.test.hash=<sha256 of the
# Dockerfile, every other file in the image directory, the busybox binary and
# the VERSION build-arg>. A build is skipped when an image with the same tag
# and the same hash already exists, so repeated test runs are fast.
#
# Environment:
#   BUSYBOX=/path/to/busybox   static busybox to use (default /bin/busybox)
#   FORCE=1                    rebuild even when the image is up to date
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
HASH_LABEL="io.stackd.test.hash"
# Bump to force a rebuild of every image when the hashing/build scheme changes.
SCHEME="stackd-test-images/v1"

# tag|image directory|VERSION build-arg
IMAGES=(
    "stackd-test/web:1|web|1"
    "stackd-test/web:2|web|2"
    "stackd-test/busybox:1|busybox|1"
    "stackd-test/web-health:1|web-health|1"
    "stackd-test/burn:1|burn|1"
)

die() {
    echo "build.sh: error: $*" >&2
    exit 1
}

# --- docker ------------------------------------------------------------------
command -v docker >/dev/null 2>&1 || die "docker CLI not found in PATH"
if ! docker_err="$(docker info 2>&1 >/dev/null)"; then
    die "cannot reach the Docker daemon (is dockerd running and is ${DOCKER_HOST:-/var/run/docker.sock} accessible?): ${docker_err}"
fi

# The legacy builder works with every daemon version; only use BuildKit when
# buildx is actually installed (the CLI refuses BuildKit builds otherwise).
if [[ -z "${DOCKER_BUILDKIT:-}" ]] && ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi

# --- serialise concurrent invocations (parallel test binaries) ----------------
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/stackd-test-images.lock"
    flock 9
fi

# --- busybox-static ---------------------------------------------------------
busybox_static_installed() {
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'
}

if [[ "${BUSYBOX}" == /bin/busybox ]] && command -v dpkg-query >/dev/null 2>&1 \
    && ! busybox_static_installed; then
    echo "busybox-static not installed; installing via apt-get" >&2
    SUDO=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "busybox-static is missing and we are not root (no sudo): run 'apt-get install -y busybox-static'"
        SUDO=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! "${SUDO[@]}" apt-get install -y busybox-static >/dev/null 2>&1; then
        "${SUDO[@]}" apt-get update >/dev/null \
            || die "apt-get update failed"
        "${SUDO[@]}" apt-get install -y busybox-static >/dev/null \
            || die "apt-get install busybox-static failed"
    fi
fi

[[ -x "${BUSYBOX}" ]] || die "busybox binary not found at ${BUSYBOX} (install busybox-static or set BUSYBOX=)"
if command -v file >/dev/null 2>&1; then
    file -L "${BUSYBOX}" | grep -q 'statically linked' \
        || die "${BUSYBOX} is not statically linked (install busybox-static, which replaces the dynamic busybox)"
fi

# --- helpers -----------------------------------------------------------------
# content_hash <image dir> <version>
content_hash() {
    local dir="$1" version="$2" f
    {
        echo "scheme ${SCHEME}"
        echo "version ${version}"
        echo "busybox $(sha256sum "${BUSYBOX}" | cut -d' ' -f1)"
        while IFS= read -r -d '' f; do
            echo "file ${f#"${dir}"/} $(sha256sum "${f}" | cut -d' ' -f1)"
        done < <(find "${dir}" -type f -print0 | LC_ALL=C sort -z)
    } | sha256sum | cut -d' ' -f1
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stackd-test-images.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT

# --- build -------------------------------------------------------------------
for spec in "${IMAGES[@]}"; do
    IFS='|' read -r tag subdir version <<<"${spec}"
    dir="${SCRIPT_DIR}/${subdir}"
    [[ -f "${dir}/Dockerfile" ]] || die "missing ${dir}/Dockerfile"

    hash="$(content_hash "${dir}" "${version}")"
    current="$(docker image inspect --format "{{ index .Config.Labels \"${HASH_LABEL}\" }}" "${tag}" 2>/dev/null || true)"
    old_id="$(docker image inspect --format '{{.Id}}' "${tag}" 2>/dev/null || true)"

    if [[ "${current}" == "${hash}" && "${FORCE:-0}" != 1 ]]; then
        echo "${tag}: up to date (${hash:0:12})"
        continue
    fi

    ctx="${WORK}/${subdir}-${version}"
    mkdir -p "${ctx}"
    cp -a "${dir}/." "${ctx}/"
    cp "${BUSYBOX}" "${ctx}/busybox"
    chmod 0755 "${ctx}/busybox"

    log="${WORK}/${subdir}-${version}.log"
    if ! docker build \
        --build-arg "VERSION=${version}" \
        --label "${HASH_LABEL}=${hash}" \
        -t "${tag}" \
        "${ctx}" >"${log}" 2>&1; then
        cat "${log}" >&2
        die "docker build of ${tag} failed"
    fi
    # Drop the superseded image if nothing else uses it (ignore failures:
    # it may still be tagged elsewhere or used by a container).
    if [[ -n "${old_id}" && "${old_id}" != "$(docker image inspect --format '{{.Id}}' "${tag}")" ]]; then
        docker image rm "${old_id}" >/dev/null 2>&1 || true
    fi
    echo "${tag}: built (${hash:0:12})"
done
