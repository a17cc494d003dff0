#!/usr/bin/env bash
# One seed to N nodes, every host in a network namespace with its link
# shaped to the same rate each way (tests/netns/lab.sh), for each file
# size, with four tools in the same run:
#   shoal         shoal tracker + shoal seed + N x shoal fetch (release build)
#   aria2         a seeding aria2c and N downloading aria2c
#   transmission  a transmission-daemon per host, driven by transmission-remote
#   http          busybox httpd on the seed's host, N concurrent curl
# The BitTorrent tools find each other through a `shoal tracker` only (no
# DHT, LPD or PEX), use the same .torrent, and keep seeding once done, as
# the shoal nodes do (--seed-for). Each tool gets a fresh lab, tracker and
# copies; the clock starts once the seed is announced (or httpd answers)
# and stops when the last node holds a complete, verified copy (each
# tool's own done-hook; curl's exit for http). Every copy is then compared
# with the source (cmp). A tool that fails or times out is reported, not
# hidden.
#
#   benches/distribution.sh [--nodes N] [--rate MBIT] [--tools "shoal aria2 transmission http"]
#                           [--timeout-factor K] [--piece-size SIZE] [--slow K:MBIT] [SIZE_MIB...]
#   default: 8 nodes, 100 Mbit/s, sizes 64 and 1024 MiB, each tool given
#   K=12 times T_min (plus a minute; http K+N) before it counts as failed.
#   Quick run: benches/distribution.sh --nodes 4 16
#   --slow K:MBIT gives the last K nodes links of MBIT each way instead
#   (a mixed fleet); T_min then follows the slowest downlink.
#
# Host 1 runs the tracker, host 2 the seed, hosts 3.. the nodes. While a
# tool runs, every host's link counters are sampled twice a second from
# the hub; the report shows when bytes started to flow, how busy the
# seed's uplink was, and the swarm's aggregate download rate over time.
# Needs root. CARGO_TARGET_DIR is honoured (SHOAL=PATH uses that binary
# instead of building); BENCH_DIR (default /var/tmp)
# holds the data; KEEP=1 keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
LAB="$repo/tests/netns/lab.sh"

nodes=8 rate=100 tools="shoal aria2 transmission http" kfactor=12 piece= slow=0 slow_rate=0
sizes=()
while (($#)); do
  case $1 in
    --nodes) nodes=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --tools) tools=$2; shift 2 ;;
    --timeout-factor) kfactor=$2; shift 2 ;;
    --piece-size) piece=$2; shift 2 ;;
    --slow) [[ $2 =~ ^([0-9]+):([0-9]+)$ ]] || { echo "--slow K:MBIT, got '$2'" >&2; exit 2; }
            slow=${BASH_REMATCH[1]} slow_rate=${BASH_REMATCH[2]}; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) sizes+=("$1"); shift ;;
  esac
done
((${#sizes[@]})) || sizes=(64 1024)
((slow <= nodes)) || { echo "--slow: more slow nodes than nodes" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "distribution.sh: needs root (network namespaces)" >&2; exit 2; }
for t in $tools; do
  case $t in
    shoal) ;;
    aria2) command -v aria2c >/dev/null || { echo "apt-get install aria2" >&2; exit 2; } ;;
    transmission) command -v transmission-daemon >/dev/null || { echo "apt-get install transmission-daemon transmission-cli" >&2; exit 2; } ;;
    http) command -v busybox >/dev/null || { echo "apt-get install busybox" >&2; exit 2; } ;;
    *) echo "unknown tool $t" >&2; exit 2 ;;
  esac
done

if [ -n "${SHOAL:-}" ]; then
  shoal=$(realpath "$SHOAL")
else
  cargo build --release --quiet --bin shoal
  shoal=$(realpath "${CARGO_TARGET_DIR:-target}/release/shoal")
fi
lab=shoal-dist-$$
hosts=$((nodes + 2))
net=198.18.2
tracker_ip=$net.1 seed_ip=$net.2
announce="http://$tracker_ip:6969/announce"
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/shoal-dist.XXXXXX")
sampler=""
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  "$LAB" down "$lab" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
"$LAB" sweep

on() { local h=$1; shift; "$LAB" exec "$lab" "$h" "$@"; }
# For background jobs: a simple command, so that $! is the program's own
# pid (lab.sh and `ip netns exec` both exec it).
ON=("$LAB" exec "$lab")
now() { date +%s.%N; }
node_ip() { echo "$net.$(($1 + 2))"; }
log() { echo "[$(date +%T)] $*" >&2; }

# Polls CMD (a shell function) every 0.2 s for at most $1 seconds.
wait_for() {
  local until=$(($(date +%s) + $1)); shift
  until "$@"; do
    (($(date +%s) < until)) || return 1
    sleep 0.2
  done
}
tracker_up() { on 1 curl -sf --noproxy '*' -o /dev/null "http://$tracker_ip:6969/stats?format=json"; }
# The tracker lists at least one seeder for the torrent.
seeded() {
  on 1 curl -sf --noproxy '*' "http://$tracker_ip:6969/scrape?info_hash=$ih_pct" 2>/dev/null |
    grep -qaE '8:completei[1-9]'
}
all_done() { local i; for ((i = 1; i <= nodes; i++)); do [ -s "$tw/done$i" ] || return 1; done; }
peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }

start_tracker() {
  "${ON[@]}" 1 "$shoal" tracker --data-dir "$tw/tracker" --http "$tracker_ip:6969" --gossip "$tracker_ip:0" \
    >"$tw/tracker.out" 2>"$tw/tracker.err" &
  wait_for 30 tracker_up || { echo "tracker did not start" >&2; return 1; }
}

# A hook script that stamps the time into $tw/done$1.
hook() {
  printf '#!/bin/sh\ndate +%%s.%%N > %s\n' "$tw/done$1" >"$tw/hook$1"
  chmod +x "$tw/hook$1"
  echo "$tw/hook$1"
}

# ---- shoal -------------------------------------------------------------
seed_shoal() {
  "${ON[@]}" 2 env RUST_LOG=warn "$shoal" seed "$src" --torrent "$torrent" --data-dir "$tw/seed-data" \
    --listen "$seed_ip:7882" >"$tw/seed.out" 2>"$tw/seed.err" &
  seed_pid=$!
  wait_for 120 seeded
}
nodes_shoal() {
  local i
  for ((i = 1; i <= nodes; i++)); do
    "${ON[@]}" $((i + 2)) env RUST_LOG=warn "$shoal" fetch "$torrent" -o "$tw/out$i" --data-dir "$tw/data$i" \
      --listen "$(node_ip "$i"):7882" --seed-for 3600s --on-complete "$(hook "$i")" \
      >"$tw/node$i.out" 2>"$tw/node$i.err" &
    node_pids[i]=$!
  done
}

# ---- aria2 -------------------------------------------------------------
aria2() { # HOST DIR NAME FLAGS...
  local h=$1 dir=$2 name=$3; shift 3
  local ip=$net.$h
  "${ON[@]}" "$h" aria2c --no-conf=true --interface="$ip" --disable-ipv6=true \
    --enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false \
    --async-dns=false --allow-overwrite=true --auto-file-renaming=false --bt-save-metadata=false \
    --file-allocation=falloc --seed-ratio=0.0 --summary-interval=0 --console-log-level=warn \
    --log-level=notice --log="$tw/$name.log" --listen-port=6881 --dir="$dir" "$@" "$torrent" \
    </dev/null >"$tw/$name.out" 2>&1 &
}
seed_aria2() {
  aria2 2 "$srcdir" seed --check-integrity=true
  seed_pid=$!
  wait_for 300 seeded
}
nodes_aria2() {
  local i
  for ((i = 1; i <= nodes; i++)); do
    aria2 $((i + 2)) "$tw/out$i" "node$i" --on-bt-download-complete="$(hook "$i")"
    node_pids[i]=$!
  done
}

# ---- transmission --------------------------------------------------------
# One daemon per host, RPC on the host's own loopback.
tr_start() { # HOST NAME [DONE-HOOK]
  local h=$1 name=$2 hk=${3:-} cfg="$tw/$2-tr"
  mkdir -p "$cfg" "$tw/$name-dl"
  cat >"$cfg/settings.json" <<EOF
{
  "bind-address-ipv4": "$net.$h", "bind-address-ipv6": "::1",
  "rpc-enabled": true, "rpc-bind-address": "127.0.0.1", "rpc-port": 9091,
  "rpc-authentication-required": false, "rpc-whitelist-enabled": false,
  "rpc-host-whitelist-enabled": false,
  "peer-port": 51413, "peer-port-random-on-start": false,
  "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
  "port-forwarding-enabled": false, "blocklist-enabled": false, "encryption": 0,
  "download-dir": "$tw/$name-dl", "incomplete-dir-enabled": false,
  "rename-partial-files": false, "watch-dir-enabled": false, "start-added-torrents": true,
  "ratio-limit-enabled": false, "idle-seeding-limit-enabled": false,
  "download-queue-enabled": false, "seed-queue-enabled": false,
  "speed-limit-down-enabled": false, "speed-limit-up-enabled": false, "alt-speed-enabled": false,
  "script-torrent-done-enabled": $([ -n "$hk" ] && echo true || echo false),
  "script-torrent-done-filename": "$hk",
  "message-level": 1
}
EOF
  "${ON[@]}" "$h" transmission-daemon --foreground --config-dir "$cfg" </dev/null >"$tw/$name.out" 2>&1 &
}
tr_remote() { local h=$1; shift; on "$h" transmission-remote 127.0.0.1:9091 "$@"; }
tr_up() { tr_remote "$1" -l >/dev/null 2>&1; }
seed_transmission() {
  tr_start 2 seed
  seed_pid=$!
  wait_for 30 tr_up 2 || return 1
  tr_remote 2 --add "$torrent" --download-dir "$srcdir" >/dev/null
  # A torrent added over data already present is checked, then seeded.
  wait_for 300 seeded
}
nodes_transmission() {
  local i
  for ((i = 1; i <= nodes; i++)); do
    tr_start $((i + 2)) "node$i" "$(hook "$i")"
    node_pids[i]=$!
  done
  for ((i = 1; i <= nodes; i++)); do wait_for 30 tr_up $((i + 2)) || return 1; done
}
# The daemons are up before the clock starts; adding the torrent starts it.
go_transmission() {
  local i
  for ((i = 1; i <= nodes; i++)); do
    tr_remote $((i + 2)) --add "$torrent" --download-dir "$tw/out$i" >/dev/null
  done
}

# ---- http ----------------------------------------------------------------
http_up() { on 3 curl -sf --noproxy '*' -o /dev/null -r 0-0 "http://$seed_ip:8080/$name"; }
seed_http() {
  "${ON[@]}" 2 busybox httpd -f -p "$seed_ip:8080" -h "$srcdir" >"$tw/seed.out" 2>&1 &
  seed_pid=$!
  wait_for 30 http_up
}
nodes_http() {
  local i
  for ((i = 1; i <= nodes; i++)); do
    mkdir -p "$tw/out$i"
    "${ON[@]}" $((i + 2)) sh -c 'curl -sS --noproxy "*" -o "$1" "$2" && date +%s.%N > "$3"' _ \
      "$tw/out$i/$name" "http://$seed_ip:8080/$name" "$tw/done$i" >"$tw/node$i.out" 2>&1 &
    node_pids[i]=$!
  done
}

# ---- one run ---------------------------------------------------------------
run_tool() { # TOOL
  local tool=$1 i
  tw="$work/run-$tool-$size_mib"
  rm -rf "$tw"; mkdir -p "$tw"
  node_pids=()
  "$LAB" up "$lab" "$hosts" "${rate}mbit" "$net" >/dev/null
  for ((i = hosts - slow + 1; i <= hosts; i++)); do
    "$LAB" rate "$lab" "$i" "${slow_rate}mbit"
  done
  start_tracker
  log "$tool: seeding $size_mib MiB"
  if ! "seed_$tool"; then
    result "$tool" "seed never became ready" ""
    disown -a; "$LAB" down "$lab"; return
  fi
  [ "$tool" = transmission ] && { nodes_transmission || { result "$tool" "daemons did not start" ""; disown -a; "$LAB" down "$lab"; return; }; }
  # Link counters from the hub, twice a second, until the tool is done.
  ( while :; do echo "$(now) $(ip -n "$lab-hub" -s -j link show)"; sleep 0.5; done ) >"$tw/timeline" &
  sampler=$!
  local t0; t0=$(now)
  case $tool in
    transmission) go_transmission ;;
    *) "nodes_$tool" ;;
  esac
  # HTTP needs about N x T_min by construction; it gets that on top.
  local k=$kfactor
  [ "$tool" = http ] && k=$((kfactor + nodes))
  local limit; limit=$(awk -v t="$t_min" -v k="$k" 'BEGIN {printf "%d", t * k + 60}')
  local why=""
  if ! wait_for "$limit" all_done; then
    why="timed out after ${limit}s"
  fi
  local seed_hwm; seed_hwm=$(peak_kib "$seed_pid")
  local node_hwm=0 h
  for i in "${node_pids[@]}"; do h=$(peak_kib "$i"); [[ $h =~ ^[0-9]+$ ]] && ((h > node_hwm)) && node_hwm=$h; done
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true; sampler=""
  # Not reported as "Killed" by the shell: lab.sh down ends them all.
  disown -a
  "$LAB" down "$lab"
  # Every copy, byte for byte.
  local bad=0 got=0
  for ((i = 1; i <= nodes; i++)); do
    if [ -s "$tw/done$i" ]; then
      got=$((got + 1))
      cmp -s "$src" "$tw/out$i/$name" || { bad=$((bad + 1)); why="$why copy $i differs;"; }
    fi
  done
  [ -z "$why" ] && ((bad == 0)) && why=ok
  echo "$tool $got $bad $seed_hwm $node_hwm" >"$tw/summary"
  result "$tool" "$why" "$t0"
}

# Prints one tool's line for the table, and its time-line.
result() { # TOOL STATUS T0
  local tool=$1 status=$2 t0=$3
  python3 - "$tw" "$tool" "$status" "$t0" "$nodes" "$rate" "$size_bytes" "$t_min" "$slow" "$slow_rate" <<'PY' | tee -a "$work/report"
import json, os, sys
tw, tool, status, t0, n, rate, size, t_min, slow, slow_rate = sys.argv[1:11]
n, rate, size, t_min = int(n), float(rate) * 1e6, int(size), float(t_min)
# The nodes' summed download links (the slow ones have their own rate).
cap = (n - int(slow)) * rate + int(slow) * float(slow_rate) * 1e6
if not t0:
    print(f"ROW | {tool} | failed: {status} | | | | | |")
    sys.exit()
t0 = float(t0)
done = []
for i in range(1, n + 1):
    p = os.path.join(tw, f"done{i}")
    try:
        done.append(float(open(p).read().split()[0]) - t0)
    except (OSError, ValueError, IndexError):
        done.append(None)
finished = sorted(d for d in done if d is not None)
summary = open(os.path.join(tw, "summary")).read().split() if os.path.exists(os.path.join(tw, "summary")) else []
seed_kib = summary[3] if len(summary) > 3 else "?"
node_kib = summary[4] if len(summary) > 4 and tool != "http" else "n/a"
# Time-line: bytes each host link carried (hub side: tx = host's download).
rows = []
for line in open(os.path.join(tw, "timeline")):
    ts, _, js = line.partition(" ")
    try:
        links = json.loads(js)
    except ValueError:
        continue
    st = {}
    for l in links:
        name = l.get("ifname", "")
        if name.startswith("h") and name[1:].isdigit():
            s = l["stats64"]
            st[int(name[1:])] = (s["tx"]["bytes"], s["rx"]["bytes"])
    rows.append((float(ts) - t0, st))
last = finished[-1] if len(finished) == n else None
if rows:
    base = rows[0][1]
    end = last if last is not None else rows[-1][0]
    def down(st, h): return st.get(h, (0, 0))[0] - base.get(h, (0, 0))[0]
    def up(st, h): return st.get(h, (0, 0))[1] - base.get(h, (0, 0))[1]
    node_hosts = range(3, n + 3)
    first = next((t for t, st in rows if sum(down(st, h) for h in node_hosts) > 1 << 20), None)
    upto = [r for r in rows if r[0] <= end + 0.5] or rows
    seed_sent = up(upto[-1][1], 2)
    # Aggregate download rate, as a share of the nodes' total link rate,
    # in ten slices of the run.
    slices = []
    for k in range(10):
        a, b = end * k / 10, end * (k + 1) / 10
        ra = min(upto, key=lambda r: abs(r[0] - a)); rb = min(upto, key=lambda r: abs(r[0] - b))
        dt = rb[0] - ra[0]
        got = sum(down(rb[1], h) - down(ra[1], h) for h in node_hosts)
        slices.append(f"{100 * got * 8 / (dt * cap):.0f}" if dt > 0 else "-")
    tl = (f"first MiB after {first:.1f}s; seed sent {seed_sent / size:.2f} copies "
          f"({100 * seed_sent * 8 / (end * rate):.0f}% of its uplink until the last node finished); "
          f"nodes' download links busy (% per tenth of the run): {' '.join(slices)}") if first is not None else "no bytes flowed"
else:
    tl = "no time-line"
fin = " ".join(f"{d:.1f}" for d in finished)
if last is not None and status == "ok":
    print(f"ROW | {tool} | {last:.2f} | {last / t_min:.2f} | {finished[0]:.2f} | {finished[len(finished)//2]:.2f} | {seed_kib} | {node_kib} |")
else:
    print(f"ROW | {tool} | {status}: {len(finished)}/{n} done | | | | {seed_kib} | {node_kib} |")
print(f"     {tool}: finish times (s): {fin}")
print(f"     {tool}: {tl}; load average {os.getloadavg()[0]:.1f}")
PY
}

mix="${rate} Mbit/s each way"
((slow == 0)) || mix="$mix, the last $slow at ${slow_rate} Mbit/s"
echo "# distribution: 1 seed + $nodes nodes, $mix, tools: $tools; $(nproc) cores; $(date -u +%FT%TZ)" | tee "$work/report"
for size_mib in "${sizes[@]}"; do
  size_bytes=$((size_mib << 20))
  srcdir="$work/src-$size_mib"
  name=image.bin
  src="$srcdir/$name"
  torrent="$work/image-$size_mib.torrent"
  mkdir -p "$srcdir"
  head -c "$size_bytes" /dev/urandom >"$src"
  "$shoal" create "$src" -o "$torrent" -t "$announce" ${piece:+--piece-size "$piece"} >/dev/null
  ih=$("$shoal" show --json "$torrent" | python3 -c 'import json,sys; print(json.load(sys.stdin)["info_hash"])')
  ih_pct=$(echo "$ih" | sed 's/../%&/g')
  # T_min = max(F/u_seed, F/d_min, N F/(u_seed + sum u)); with equal
  # links F/u.
  t_min=$(awk -v f="$size_bytes" -v r="$rate" -v n="$nodes" -v k="$slow" -v s="$slow_rate" 'BEGIN {
    d = (k > 0 && s < r) ? s : r; t = f * 8 / (r * 1e6); if (f * 8 / (d * 1e6) > t) t = f * 8 / (d * 1e6)
    a = n * f * 8 / ((r + (n - k) * r + k * s) * 1e6); if (a > t) t = a; printf "%.3f", t }')
  echo | tee -a "$work/report"
  echo "## $size_mib MiB: T_min = $t_min s" | tee -a "$work/report"
  for tool in $tools; do run_tool "$tool"; done
  # The copies go; the logs stay until exit (KEEP=1 keeps them).
  rm -rf "$work"/run-*-"$size_mib"/out* "$src"
done
echo
echo "| size | tool | last node s | / T_min | first node s | median s | seed peak RSS KiB | node peak RSS KiB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
awk '/^## / {size=$2" MiB"} /^ROW/ {sub(/^ROW /, ""); print "| " size " " $0}' "$work/report"
