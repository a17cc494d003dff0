#!/usr/bin/env bash
# A network-namespace lab: N "hosts" on one shaped LAN, for the multi-host
# test (tests/multihost.rs, through tests/common/netns.rs) and the
# distribution benchmarks (benches/*.sh). This script is the one place the
# topology is built; both callers drive it.
#
#   lab.sh up LAB N RATE [SUBNET]   build hosts 1..N (prints their names)
#   lab.sh down LAB                 delete everything LAB made (idempotent)
#   lab.sh exec LAB I CMD...        run CMD on host I
#   lab.sh addr LAB I [SUBNET]      print host I's address
#   lab.sh rate LAB I RATE          re-shape host I's link to RATE (a
#                                   slower machine among the rest)
#   lab.sh sweep                    delete labs whose creating process is gone
#
# Topology: a namespace LAB-hub holds bridge br0; host I is namespace
# LAB-hI, with eth0 (SUBNET.I/24) plugged by a veth pair into br0 and its
# loopback up. SUBNET defaults to 198.18.2 and must lie in 198.18.0.0/15
# (198.18.1.0/24 belongs to tests/tracker_partition.rs). Nothing is added
# to the caller's own namespace, so no packet leaves the lab.
#
# RATE (a tc rate such as 50mbit, or "none") shapes each direction of each
# host's link with a token bucket: on the hub side of the veth it limits
# what the host receives (its download), on eth0 inside the host what the
# host sends (its upload).
#
# LAB must be shoal-TAG-PID (PID the process that owns the lab, TAG
# without dashes): `sweep` deletes the namespaces of labs whose PID no
# longer exists, so a crashed run never breaks the next one.
set -euo pipefail

die() { echo "lab.sh: $*" >&2; exit 2; }

# The token bucket: BURST must cover at least one timer tick at RATE and a
# 64 KiB GSO segment; LATENCY bounds the queue (and so the bufferbloat a
# sender can build).
burst=${LAB_BURST:-64kb}
latency=${LAB_LATENCY:-20ms}

check_name() {
  [[ $1 =~ ^shoal-[a-z0-9]+-[0-9]+$ ]] || die "lab name must be shoal-TAG-PID, got '$1'"
}

check_subnet() {
  [[ $1 =~ ^198\.1[89]\.([0-9]+)$ ]] || die "subnet $1 is not inside 198.18.0.0/15"
  local third=${BASH_REMATCH[1]}
  ((third <= 255)) || die "bad subnet $1"
  [ "$1" != 198.18.1 ] || die "198.18.1.0/24 is tests/tracker_partition.rs's"
}

# Namespaces whose name starts with $1.
spaces_of() {
  ip netns list | awk '{print $1}' | grep -E "^$1-(hub|h[0-9]+)$" || true
}

down() {
  check_name "$1"
  local ns
  # Hosts first: deleting a namespace destroys its veth end, and with it
  # the peer on the bridge.
  for ns in $(spaces_of "$1" | sort -r); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

shape() { # NS DEV
  [ "$rate" = none ] && return 0
  tc -n "$1" qdisc replace dev "$2" root tbf rate "$rate" burst "$burst" latency "$latency"
}

up() {
  local lab=$1 n=$2 rate=$3 subnet=${4:-198.18.2}
  check_name "$lab"
  check_subnet "$subnet"
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 250)) || die "N must be 1..250, got '$n'"
  [ "$rate" = none ] || [[ $rate =~ ^[0-9]+([kmg]?bit)$ ]] || die "RATE like 50mbit or none, got '$rate'"
  # A half-built lab of the same name (an earlier attempt of this very
  # process) is removed first, so `up` can simply be retried.
  down "$lab"
  local hub=$lab-hub i ns
  ip netns add "$hub"
  ip -n "$hub" link set lo up
  ip -n "$hub" link add br0 type bridge forward_delay 0 stp_state 0
  ip -n "$hub" link set br0 up
  for ((i = 1; i <= n; i++)); do
    ns=$lab-h$i
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$hub" link add "h$i" type veth peer name eth0 netns "$ns"
    ip -n "$hub" link set "h$i" master br0 up
    ip -n "$ns" addr add "$subnet.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    shape "$hub" "h$i"
    shape "$ns" eth0
    echo "$ns"
  done
}

sweep() {
  local ns pid
  for ns in $(ip netns list | awk '{print $1}' | grep -E '^shoal-[a-z0-9]+-[0-9]+-(hub|h[0-9]+)$' || true); do
    pid=${ns#shoal-*-}
    pid=${pid%%-*}
    [ -d "/proc/$pid" ] && continue
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

cmd=${1:-}
shift || true
case $cmd in
  up)
    (($# >= 3)) || die "usage: lab.sh up LAB N RATE [SUBNET]"
    rate=$3
    up "$@" ;;
  down)
    (($# == 1)) || die "usage: lab.sh down LAB"
    down "$1" ;;
  exec)
    (($# >= 3)) || die "usage: lab.sh exec LAB I CMD..."
    check_name "$1"
    lab=$1 i=$2
    shift 2
    exec ip netns exec "$lab-h$i" "$@" ;;
  rate)
    (($# == 3)) || die "usage: lab.sh rate LAB I RATE"
    check_name "$1"
    [[ $2 =~ ^[0-9]+$ ]] || die "I must be a host number, got '$2'"
    [[ $3 =~ ^[0-9]+([kmg]?bit)$ ]] || die "RATE like 50mbit, got '$3'"
    rate=$3
    shape "$1-hub" "h$2"
    shape "$1-h$2" eth0 ;;
  addr)
    (($# >= 2)) || die "usage: lab.sh addr LAB I [SUBNET]"
    check_subnet "${3:-198.18.2}"
    echo "${3:-198.18.2}.$2" ;;
  sweep) sweep ;;
  *) die "usage: lab.sh up|down|exec|rate|addr|sweep ..." ;;
esac
