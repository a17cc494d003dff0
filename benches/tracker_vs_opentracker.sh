#!/usr/bin/env bash
# Announce throughput of `shoal tracker` against opentracker (Debian's
# package), in the same run, with the same load generator
# (benches/tracker_load.rs): 1,000 torrents, random peers from a pool of 100
# per torrent, compact announces, in keep-alive and connection-close modes.
# Then the same load on one shoal node while two more replicate it, and
# the resident memory of each tracker holding 1M peers.
#
#   benches/tracker_vs_opentracker.sh [SECONDS=10] [CONNECTIONS=32] [THREADS=1]
#
# Everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
threads=${3:-1}
command -v opentracker >/dev/null || { echo "apt-get install opentracker" >&2; exit 1; }

cargo build --release --quiet --bin shoal
cargo bench --no-run --quiet --bench tracker_load 2>/dev/null
tdir=${CARGO_TARGET_DIR:-$PWD/target}
lg=$(ls -t "$tdir"/release/deps/tracker_load-* | grep -v '\.d$' | head -1)
shoal=$tdir/release/shoal

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
rps() { sed -n 's/.*"rps":\([0-9]*\).*/\1/p'; }

# opentracker chroots into -d and only accepts whitelisted hashes there.
"$lg" --write-hashes "$work/whitelist" --torrents 1000
ot_port=$(free_port)
opentracker -i 127.0.0.1 -p "$ot_port" -P "$ot_port" -u nobody -d "$work" -w /whitelist >"$work/ot.log" 2>&1 &
pids+=($!); ot_pid=$!
start_shoal() { # name http gossip [join]
  local dir="$work/$1"; mkdir -p "$dir"
  local join=(); [ -n "${4:-}" ] && join=(--join "$4")
  RUST_LOG=warn "$shoal" tracker --data-dir "$dir" --http "127.0.0.1:$2" --gossip "127.0.0.1:$3" "${join[@]}" >"$dir/out" 2>"$dir/err" &
  pids+=($!)
}
s_port=$(free_port); s_gossip=$(free_port)
start_shoal a "$s_port" "$s_gossip"; s_pid=$!
wait_http "$ot_port"; wait_http "$s_port"

# CPU time of a process so far, in seconds (utime + stime).
cpu_of() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
# run PORT MODE PID KEY: records req/s in r[KEY], and the CPU microseconds
# per request spent by the load generator (gen[KEY]) and the tracker (srv[KEY]).
declare -A r gen srv
run() {
  local before after out
  before=$(cpu_of "$3")
  out=$(/usr/bin/time -f 'cpu %U %S' "$lg" --target "127.0.0.1:$1" --seconds "$secs" --connections "$conns" --mode "$2" --threads "$threads" --torrents 1000 --peers-per-torrent 100 2>&1)
  after=$(cpu_of "$3")
  local ok; ok=$(sed -n 's/.*"ok":\([0-9]*\).*/\1/p' <<<"$out")
  r[$4]=$(rps <<<"$out")
  gen[$4]=$(awk -v ok="$ok" '/^cpu / {printf "%.1f", ($2 + $3) * 1e6 / ok}' <<<"$out")
  srv[$4]=$(awk -v ok="$ok" -v a="$before" -v b="$after" 'BEGIN {printf "%.1f", (b - a) * 1e6 / ok}')
}
for mode in keepalive close; do
  run "$ot_port" "$mode" "$ot_pid" "ot_$mode"
  run "$s_port" "$mode" "$s_pid" "shoal_$mode"
done

# Replication: two more shoal nodes join the first and copy its table.
b_port=$(free_port); c_port=$(free_port)
start_shoal b "$b_port" "$(free_port)" "127.0.0.1:$s_gossip"
start_shoal c "$c_port" "$(free_port)" "127.0.0.1:$s_gossip"
wait_http "$b_port"; wait_http "$c_port"
sleep 3 # let gossip connect; the load below is what is measured
for mode in keepalive close; do run "$s_port" "$mode" "$s_pid" "repl_$mode"; done
peers_on() { curl -s "http://127.0.0.1:$1/stats?format=json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tracker"]["peers"])'; }
pa=$(peers_on "$s_port"); pb=$(peers_on "$b_port"); pc=$(peers_on "$c_port")

# Memory: fill both trackers with 1,000 torrents x 1,000 peers = 1M peers.
base_ot=$(rss_kib "$ot_pid"); base_s=$(rss_kib "$s_pid")
"$lg" --target "127.0.0.1:$ot_port" --fill --torrents 1000 --peers-per-torrent 1000 --seconds 300 --connections "$conns" >/dev/null
"$lg" --target "127.0.0.1:$s_port" --fill --torrents 1000 --peers-per-torrent 1000 --seconds 300 --connections "$conns" >/dev/null
mem_ot=$(rss_kib "$ot_pid"); mem_s=$(rss_kib "$s_pid")
ps_on() { curl -s "http://127.0.0.1:$1/stats?format=json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tracker"]["peers"])'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "announce load: ${secs}s per run, ${conns} connections, ${threads} generator threads, 1000 torrents x 100 peers, $(nproc) cores shared with the load generator"
echo
echo "| mode | opentracker req/s | shoal req/s | shoal / opentracker | shoal + 2 replicas req/s | ratio |"
echo "| --- | --- | --- | --- | --- | --- |"
for mode in keepalive close; do
  echo "| $mode | ${r[ot_$mode]} | ${r[shoal_$mode]} | $(ratio "${r[shoal_$mode]}" "${r[ot_$mode]}")x | ${r[repl_$mode]} | $(ratio "${r[repl_$mode]}" "${r[ot_$mode]}")x |"
done
echo
echo "CPU per request (microseconds, user + system, from the same runs):"
echo
echo "| mode | generator (vs opentracker) | opentracker | generator (vs shoal) | shoal | ceiling for any tracker |"
echo "| --- | --- | --- | --- | --- | --- |"
for mode in keepalive close; do
  # No tracker can be measured faster than the generator itself can go
  # with every core to itself: cores / (its CPU per request). Against
  # opentracker's measured rate, that is the highest ratio this machine
  # can show, whatever the tracker does.
  ceil=$(awk -v g="${gen[ot_$mode]}" -v n="$(nproc)" -v ot="${r[ot_$mode]}" 'BEGIN {printf "%.2f", n * 1e6 / g / ot}')
  echo "| $mode | ${gen[ot_$mode]} | ${srv[ot_$mode]} | ${gen[shoal_$mode]} | ${srv[shoal_$mode]} | ${ceil}x opentracker |"
done
echo
echo "replicated table after the load: A $pa peers, B $pb, C $pc"
echo
echo "| tracker | RSS before | RSS with 1M peers | per 1M peers |"
echo "| --- | --- | --- | --- |"
echo "| opentracker | ${base_ot} KiB | ${mem_ot} KiB | $(( (mem_ot - base_ot) / 1024 )) MiB |"
echo "| shoal ($(ps_on "$s_port") peers held) | ${base_s} KiB | ${mem_s} KiB | $(( (mem_s - base_s) / 1024 )) MiB |"
