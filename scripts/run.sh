#!/usr/bin/env bash
# Start `sbx serve` in the foreground, wait until it answers and its base
# template is ready (the first start on a machine builds it: minutes), then
# print the lines that point the E2B SDKs and the sbx CLI at it.
#
#   scripts/run.sh [LISTEN [DATA_DIR [sbx serve flags...]]]
#
# SBX_BIN_DIR names the directory of the sbx build (default bin).
set -euo pipefail
listen=${1:-127.0.0.1:3000}
data_dir=${2:-/var/lib/sbx}
shift $(( $# < 2 ? $# : 2 ))
cd "$(dirname "$0")/.."
sbx=${SBX_BIN_DIR:-bin}/sbx
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
scheme=http
for f in "$@"; do case "$f" in --tls-cert|--tls-cert=*) scheme=https ;; esac; done

$sudo "$sbx" serve --listen "$listen" --data-dir "$data_dir" "$@" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' INT TERM EXIT

alive() { kill -0 $pid 2>/dev/null || { echo "sbx serve exited; see the log above" >&2; exit 1; }; }

# -k: /health carries no secret, and the CLI below checks the certificate
# with what sbx env prints.
for _ in $(seq 1 300); do
  curl -fsSk "$scheme://$listen/health" >/dev/null 2>&1 && break
  alive
  sleep 0.1
done
curl -fsSk "$scheme://$listen/health" >/dev/null 2>&1 || { echo "sbx serve does not answer on $scheme://$listen/health" >&2; exit 1; }

env_lines=$($sudo "$sbx" env --data-dir "$data_dir" --listen "$listen")
eval "$env_lines"

# The base template: "ready", or still being built (its progress is in the
# server log above; this prints a line every 15 s so the wait is visible).
started=$(date +%s)
last=0
while :; do
  status=$("$sbx" template list 2>/dev/null | awk 'NR > 1 && ($1 == "base" || $2 ~ /(^|,)base(,|$)/) { print $3; exit }') || true
  [ "$status" = ready ] && break
  alive
  now=$(date +%s)
  if (( now - last >= 15 )); then
    echo "sbx: waiting for the base template (${status:-not listed yet}, $(( now - started )) s; the first start on a machine builds it, a few minutes)"
    last=$now
  fi
  sleep 1
done

echo
echo "sbx is up ($scheme://$listen; base template ready). In another shell run:"
echo
sed 's/^/    /' <<<"$env_lines"
echo
echo "(or: eval \"\$(sudo $sbx env --data-dir $data_dir --listen $listen)\")"
wait $pid
