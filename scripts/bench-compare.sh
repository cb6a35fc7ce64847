#!/usr/bin/env bash
# Compare sbx builds side by side through the official E2B SDK, in one run:
# each build gets a fresh server (default flags, its own data dir and port),
# and tests/e2b-js/compare.mjs interleaves samples between them.
#
#   scripts/bench-compare.sh old=/var/tmp/sbx-baseline new=bin [-- tti runcode --n 40]
#
# Each NAME=DIR names a directory holding sbx, envd and codeinterp (as
# `make build` leaves them in bin/). Needs root, crun, node and `make js-deps`.
# SBX_SERVE_ARGS adds flags to every server (e.g. '--pool base=0:0' for
# cold creates); NAME=DIR:FLAG,FLAG adds flags to one (sbx-runsc=bin:--runtime=runsc).
# SBX_COMPARE_SCRIPT runs another script of tests/e2b-js (peers.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
builds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do builds+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#builds[@]} -ge 1 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
scenario_args=("$@")
needs_ci=0
for a in "${scenario_args[@]}"; do [ "$a" = runcode ] && needs_ci=1; done

pids=(); dirs=(); compare=""
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for d in "${dirs[@]}"; do
    # A graceful stop keeps sandboxes for the next server: remove them.
    for rt in crun runsc; do
      [ -d "$d/runtime/$rt" ] || continue
      for id in $($rt --root "$d/runtime/$rt" list -q 2>/dev/null || true); do
        $rt --root "$d/runtime/$rt" delete -f "$id" >/dev/null 2>&1 || true
      done
    done
    awk -v d="$d" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$d"
  done
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for b in "${builds[@]}"; do
  name=${b%%=*}; dir=${b#*=}; own=""
  case $dir in *:*) own=${dir#*:}; own=${own//,/ }; dir=${dir%%:*} ;; esac
  [ -x "$dir/sbx" ] || { echo "bench-compare: $dir/sbx is missing" >&2; exit 1; }
  data=$(mktemp -d /tmp/sbx-compare-"$name"-XXXX); dirs+=("$data")
  addr=127.0.0.1:$(free_port)
  # shellcheck disable=SC2086 # SBX_SERVE_ARGS is a list of flags
  "$dir/sbx" serve --listen "$addr" --data-dir "$data" ${SBX_SERVE_ARGS:-} $own >"$data.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do
    curl -fsS "http://$addr/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  key=$("$dir/sbx" env --data-dir "$data" --listen "$addr" | sed -n "s/^export E2B_API_KEY=['\"]\{0,1\}\([^'\"]*\).*/\1/p")
  want='"base"'; [ $needs_ci = 1 ] && want='"code-interpreter"'
  for _ in $(seq 1 1200); do
    curl -fsS -H "X-API-Key: $key" "http://$addr/templates" 2>/dev/null |
      python3 -c "import sys,json; t=[x for x in json.load(sys.stdin) if $want in [x.get('templateID')]+x.get('aliases',[])+x.get('names',[])]; sys.exit(0 if t and t[0].get('buildStatus')=='ready' else 1)" 2>/dev/null && break
    sleep 0.5
  done
  echo "bench-compare: $name ($dir, $("$dir/sbx" --version 2>/dev/null | head -1)) on $addr, data dir $data"
  compare="$compare$name=http://$addr,$key;"
done
sleep 5 # let the warm pools fill
echo "bench-compare: load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
# The CPU behind the samples: wall-clock on a shared machine moves with
# whoever else runs, CPU per create much less. Each server's own time plus
# that of the processes it waited for (crun, ...), and the sandboxes' cgroups
# (all servers' together: they share /sbx), over the scenarios' run.
server_ms() { awk -v t="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); split($0, f, " "); print int((f[12]+f[13]+f[14]+f[15])*1000/t)}' "/proc/$1/stat"; }
# The server process alone (its threads, not the runtime it waited for).
own_ms() { awk -v t="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); split($0, f, " "); print int((f[12]+f[13])*1000/t)}' "/proc/$1/stat"; }
sandboxes_ms() {
  if [ -r /sys/fs/cgroup/cpuacct/sbx/cpuacct.usage ]; then echo $(($(cat /sys/fs/cgroup/cpuacct/sbx/cpuacct.usage) / 1000000))
  elif [ -r /sys/fs/cgroup/sbx/cpu.stat ]; then awk '$1 == "usage_usec" {print int($2 / 1000)}' /sys/fs/cgroup/sbx/cpu.stat
  else echo 0; fi
}
creates() { grep -c 'msg="sandbox created"' "$1.log" || true; }
# For runcode, warm pools keep starting sandboxes after the first one is
# ready (a code-interpreter sandbox's kernels and numpy preload take
# seconds of CPU): wait, up to a minute, until the sandboxes use less than
# a tenth of a CPU, so the samples do not compete with them. (The create
# scenarios keep measuring pools as users meet them.)
if [ $needs_ci = 1 ]; then
  for _ in $(seq 1 60); do
    a=$(sandboxes_ms); sleep 1; b=$(sandboxes_ms)
    [ $((b - a)) -lt 100 ] && break
  done
  echo "bench-compare: pools settled, load average $(cut -d' ' -f1-3 /proc/loadavg)"
fi
cpu0=(); own0=(); made0=(); for i in "${!pids[@]}"; do cpu0+=("$(server_ms "${pids[$i]}")"); own0+=("$(own_ms "${pids[$i]}")"); made0+=("$(creates "${dirs[$i]}")"); done
sbx0=$(sandboxes_ms)
cd "$root/tests/e2b-js"
SBX_COMPARE="$compare" node "${SBX_COMPARE_SCRIPT:-compare.mjs}" "${scenario_args[@]}"
all=0
for i in "${!pids[@]}"; do
  b=${builds[$i]}; ms=$(($(server_ms "${pids[$i]}") - cpu0[i])); made=$(($(creates "${dirs[$i]}") - made0[i])); all=$((all + made))
  echo "cpu: ${b%%=*}: server + runtime ${ms} ms for ${made} creates ($(awk -v a="$ms" -v n="$made" 'BEGIN {printf "%.1f", n ? a / n : 0}') ms each, pool refills included)"
  own=$(($(own_ms "${pids[$i]}") - own0[i]))
  echo "cpu: ${b%%=*}: server alone ${own} ms ($(awk -v a="$own" -v n="$made" 'BEGIN {printf "%.1f", n ? a / n : 0}') ms each)"
done
ms=$(($(sandboxes_ms) - sbx0))
echo "cpu: sandboxes (all servers): ${ms} ms for ${all} creates ($(awk -v a="$ms" -v n="$all" 'BEGIN {printf "%.1f", n ? a / n : 0}') ms each)"
