#!/usr/bin/env bash
# One seed to one node on loopback, end to end, against iperf3 TCP on the
# same loopback in the same run; then the resident memory of idle shoal
# processes.
#
#   benches/pair_vs_iperf3.sh [SIZE_MIB=1024] [RUNS=3]
#
# Each shoal run: a fresh `shoal fetch` (new data dir, empty output dir)
# of a SIZE_MIB random file from a `shoal seed` found through a `shoal
# tracker`, all on 127.0.0.1. Its time runs from starting the fetch to the
# moment it prints "complete", i.e. every piece received, verified, written
# (durably, as storage marks a piece had only once it is) and the whole
# file re-checked on disk. CPU is the fetch's user+sys for the whole run
# plus what the seed used meanwhile (from /proc), per GB moved. iperf3
# moves the same number of bytes over one TCP connection (-n). Runs are
# interleaved, iperf3 first; the medians are reported.
#
# Memory: VmRSS of `shoal node`, `shoal tracker`, `shoal seed` (with the
# file loaded, before any peer came) and `shoal fetch` (no peer to fetch
# from yet), each 3 s after it is ready; and the peak (VmHWM) of the seed
# and of the fetch over the runs.
#
# CARGO_TARGET_DIR is honoured (SHOAL=PATH uses that binary instead of
# building); BENCH_DIR (default /var/tmp) holds the data.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
runs=${2:-3}
command -v iperf3 >/dev/null || { echo "apt-get install iperf3" >&2; exit 2; }
if [ -n "${SHOAL:-}" ]; then
  shoal=$(realpath "$SHOAL")
else
  cargo build --release --quiet --bin shoal
  shoal=$(realpath "${CARGO_TARGET_DIR:-target}/release/shoal")
fi
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/shoal-pair.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export RUST_LOG=warn

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits at most $1 s for a line matching $3 in file $2.
wait_line() {
  local until=$(($(date +%s) + $1))
  until grep -q "$3" "$2" 2>/dev/null; do
    (($(date +%s) < until)) || { echo "no '$3' in $2 after $1 s" >&2; cat "$2" >&2; return 1; }
    sleep 0.05
  done
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

size=$((size_mib << 20))
mkdir -p "$work/src"
head -c "$size" /dev/urandom >"$work/src/image.bin"

# Idle node and tracker.
"$shoal" node --data-dir "$work/node" --http 127.0.0.1:0 --gossip 127.0.0.1:0 >"$work/node.out" 2>"$work/node.err" &
node_pid=$!; pids+=("$node_pid")
t_port=$(free_port)
"$shoal" tracker --data-dir "$work/tracker" --http "127.0.0.1:$t_port" --gossip 127.0.0.1:0 >"$work/tracker.out" 2>"$work/tracker.err" &
tracker_pid=$!; pids+=("$tracker_pid")
wait_line 30 "$work/node.out" "http listening on"
wait_line 30 "$work/tracker.out" "http listening on"
sleep 3
rss_node=$(rss "$node_pid"); rss_tracker=$(rss "$tracker_pid")
kill "$node_pid"

torrent="$work/image.torrent"
"$shoal" create "$work/src/image.bin" -o "$torrent" -t "http://127.0.0.1:$t_port/announce" >/dev/null

# An idle fetch: no seed yet.
"$shoal" fetch "$torrent" -o "$work/idle-out" --data-dir "$work/idle-data" --listen 127.0.0.1:0 >"$work/idle.out" 2>"$work/idle.err" &
idle_pid=$!; pids+=("$idle_pid")
wait_line 30 "$work/idle.out" "listening on"
sleep 3
rss_fetch=$(rss "$idle_pid")
kill "$idle_pid"

"$shoal" seed "$work/src/image.bin" --torrent "$torrent" --data-dir "$work/seed-data" --listen 127.0.0.1:0 >"$work/seed.out" 2>"$work/seed.err" &
seed_pid=$!; pids+=("$seed_pid")
wait_line 120 "$work/seed.out" "listening on"
sleep 3
rss_seed=$(rss "$seed_pid")

gbs=() ibs=() dds=() cpus=() fetch_hwm=0
for ((r = 1; r <= runs; r++)); do
  # iperf3: the same bytes over one TCP connection.
  ip_port=$(free_port)
  iperf3 -s -1 -B 127.0.0.1 -p "$ip_port" >/dev/null 2>&1 &
  ip_pid=$!
  # (A probe connection would use up the one-shot server: watch the socket.)
  until ss -ltnH "sport = :$ip_port" | grep -q .; do sleep 0.05; done
  bps=$(iperf3 -c 127.0.0.1 -p "$ip_port" -n "$size" -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
  wait "$ip_pid" 2>/dev/null || true
  ibs+=("$(awk -v b="$bps" 'BEGIN {printf "%.3f", b / 8e9}')")

  # The disk: dd writes the same bytes to the same file system and syncs
  # them, the floor under any fetch that keeps what it receives. (On this
  # VM, writing into freshly allocated page cache runs at 0.3-1.7 GB/s
  # depending on the memory's state, so it can bind before the network.)
  dd_out=$(dd if=/dev/zero of="$work/dd.bin" bs=1M count="$size_mib" conv=fdatasync 2>&1 | tail -1)
  rm -f "$work/dd.bin"
  dds+=("$(echo "$dd_out" | awk -v f="$size" '{for (i = 1; i <= NF; i++) if ($i == "s,") print f / $(i - 1) / 1e9}' | xargs printf '%.3f')")

  # shoal: a fresh fetch, timed to its "complete" line.
  rm -rf "$work/out" "$work/fetch-data"
  seed_before=$(cpu_ticks "$seed_pid")
  start=$(date +%s.%N)
  /usr/bin/time -f '%U %S %M' -o "$work/fetch.time" \
    "$shoal" fetch "$torrent" -o "$work/out" --data-dir "$work/fetch-data" --listen 127.0.0.1:0 \
    --on-complete "date +%s.%N > $work/done" >"$work/fetch.out" 2>"$work/fetch.err"
  [ -s "$work/done" ] || { echo "fetch did not complete:" >&2; cat "$work/fetch.err" >&2; exit 1; }
  done_at=$(cat "$work/done"); rm -f "$work/done"
  seed_after=$(cpu_ticks "$seed_pid")
  cmp "$work/src/image.bin" "$work/out/image.bin"
  read -r fu fs fm <"$work/fetch.time"
  ((fm > fetch_hwm)) && fetch_hwm=$fm
  secs=$(awk -v a="$start" -v b="$done_at" 'BEGIN {printf "%.3f", b - a}')
  gbs+=("$(awk -v s="$secs" -v f="$size" 'BEGIN {printf "%.3f", f / s / 1e9}')")
  cpus+=("$(awk -v u="$fu" -v s="$fs" -v d="$((seed_after - seed_before))" -v t="$tck" -v f="$size" \
    'BEGIN {printf "%.2f", (u + s + d / t) / (f / 1e9)}')")
  echo "run $r: iperf3 ${ibs[-1]} GB/s; dd ${dds[-1]} GB/s; shoal ${secs}s = ${gbs[-1]} GB/s, fetch cpu ${fu}u+${fs}s, seed cpu $(awk -v d="$((seed_after - seed_before))" -v t="$tck" 'BEGIN {printf "%.2f", d / t}')s, ${cpus[-1]} cpu-s/GB" >&2
done
seed_hwm=$(hwm "$seed_pid")

ig=$(printf '%s\n' "${ibs[@]}" | median)
sg=$(printf '%s\n' "${gbs[@]}" | median)
dg=$(printf '%s\n' "${dds[@]}" | median)
cg=$(printf '%s\n' "${cpus[@]}" | median)
echo "single pair on loopback: $size_mib MiB, $runs runs each, $(nproc) cores; $(date -u +%FT%TZ)"
echo
echo "| | median GB/s | runs GB/s | ratio |"
echo "| --- | --- | --- | --- |"
echo "| iperf3 TCP (-n $size_mib MiB) | $ig | ${ibs[*]} | 1.00 |"
echo "| dd to the same file system, synced (the disk's floor) | $dg | ${dds[*]} | $(awk -v a="$dg" -v b="$ig" 'BEGIN {printf "%.2f", a / b}') |"
echo "| shoal seed -> shoal fetch, verified and on disk | $sg | ${gbs[*]} | $(awk -v a="$sg" -v b="$ig" 'BEGIN {printf "%.2f", a / b}') |"
echo
echo "shoal / dd: $(awk -v a="$sg" -v b="$dg" 'BEGIN {printf "%.2f", a / b}')"
echo
echo "shoal CPU (fetch + seed, user + sys) per GB: median $cg s (runs: ${cpus[*]})"
echo
echo "| process | RSS KiB |"
echo "| --- | --- |"
echo "| shoal node, idle | $rss_node |"
echo "| shoal tracker, idle | $rss_tracker |"
echo "| shoal fetch, idle (no peer yet) | $rss_fetch |"
echo "| shoal seed, idle ($size_mib MiB file, no peer yet) | $rss_seed |"
echo "| shoal seed, peak over the runs (VmHWM) | $seed_hwm |"
echo "| shoal fetch, peak (max RSS from /usr/bin/time) | $fetch_hwm |"
