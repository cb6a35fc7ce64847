#!/usr/bin/env bash
# Start `sbx serve` in the foreground and, once it answers, print the lines
# that point the E2B SDKs and the sbx CLI at it.
set -euo pipefail
listen=${1:-127.0.0.1:3000}
data_dir=${2:-/var/lib/sbx}
cd "$(dirname "$0")/.."
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
$sudo bin/sbx serve --listen "$listen" --data-dir "$data_dir" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' INT TERM EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://$listen/health" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "sbx serve exited; see the log above" >&2; exit 1; }
  sleep 0.1
done
echo
echo "sbx is up. In another shell run:"
echo
$sudo bin/sbx env --data-dir "$data_dir" --listen "$listen" | sed 's/^/    /'
echo
echo "(or: eval \"\$(sudo bin/sbx env --data-dir $data_dir --listen $listen)\")"
echo "The built-in templates are prepared in the background on first start (a few minutes); progress is logged below."
wait $pid
