#!/usr/bin/env bash
# sbx side by side with its peers on this machine, in one run (make
# bench-peers): sbx with its defaults (crun), sbx under runsc (gVisor) when
# runsc is installed, and Docker when an engine answers on its socket (the
# image is imported once from sbx's cached base root filesystem, so every
# target runs the same files). Prints a table with ratios to sbx's numbers;
# tests/e2b-js/peers.mjs says what each column measures.
#
#   scripts/bench-peers.sh [--n 30] [--density 100]
#   PEERS_RUNSC=0 scripts/bench-peers.sh --n 0 --density 1000   # sbx alone
#
# Needs root, crun, node and `make build js-deps`. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
builds=("sbx=bin")
if [ "${PEERS_RUNSC:-1}" = 0 ]; then
  echo "bench-peers: PEERS_RUNSC=0: sbx under runsc left out (e.g. a density run too big for its ~21 MiB per sandbox)"
elif command -v runsc >/dev/null 2>&1; then
  builds+=("sbx-runsc=bin:--runtime=runsc")
else
  echo "bench-peers: runsc: not installed, sbx under runsc left out"
fi
sock=${DOCKER_SOCKET:-/var/run/docker.sock}
if [ -S "$sock" ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  image=${DOCKER_IMAGE:-sbx-base:bench}
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    base=$(ls -d "${SBX_ROOTFS_CACHE:-/var/cache/sbx/rootfs}"/base-* 2>/dev/null | head -1)
    [ -n "$base" ] || { echo "bench-peers: no cached base root filesystem to import into Docker; run sbx serve once first" >&2; exit 1; }
    echo "bench-peers: importing $base into Docker as $image"
    tar -C "$base" -c . | docker import - "$image" >/dev/null
  fi
  export DOCKER_SOCKET=$sock DOCKER_IMAGE=$image
else
  echo "bench-peers: Docker: not present (no engine answering on $sock)"
fi
SBX_MACHINE="$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(crun --version | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
export SBX_MACHINE
# The density run holds more sandboxes than a team's default cap (100).
export SBX_SERVE_ARGS="${SBX_SERVE_ARGS:-} --team-max-sandboxes 0"
SBX_COMPARE_SCRIPT=peers.mjs exec scripts/bench-compare.sh "${builds[@]}" -- "$@"
