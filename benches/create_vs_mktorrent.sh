#!/usr/bin/env bash
# Compares `shoal create` with `mktorrent -t <cores>` on one file that sits
# in the page cache, in the same run, and reports `shoal verify` throughput
# next to b3sum and sha1sum on the same file.
#
#   benches/create_vs_mktorrent.sh [SIZE_MIB=1024] [RUNS=5]
#
# Each tool runs RUNS times, interleaved so drift hits them all alike; the
# median wall time is reported with its ratio to mktorrent. Both tools use
# 1 MiB pieces (what shoal picks for 1 GiB anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
runs=${2:-5}
cores=$(nproc)

for tool in mktorrent b3sum sha1sum; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install mktorrent b3sum)" >&2; exit 1; }
done
cargo build --release --quiet --bin shoal
shoal=target/release/shoal

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
file="$work/image.raw"
head -c $((size_mib << 20)) /dev/urandom >"$file"
cat "$file" >/dev/null # into the page cache

now() { date +%s.%N; }
declare -A times
time_it() { # name, command...
  local name=$1; shift
  rm -f "$work/mk.torrent" "$work/s.torrent"
  local t0 t1
  t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
  times[$name]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f", b - a}') "
}

for ((i = 0; i < runs; i++)); do
  time_it mktorrent mktorrent -t "$cores" -l 20 -o "$work/mk.torrent" "$file"
  time_it shoal_both "$shoal" create "$file" --piece-size 1M -o "$work/s.torrent"
  time_it shoal_sha1 "$shoal" create "$file" --piece-size 1M --no-blake3 -o "$work/s.torrent"
done
"$shoal" create "$file" --piece-size 1M -o "$work/b3.torrent" >/dev/null
"$shoal" create "$file" --piece-size 1M --no-blake3 -o "$work/sha.torrent" >/dev/null
for ((i = 0; i < runs; i++)); do
  time_it verify_b3 "$shoal" verify "$work/b3.torrent" "$file"
  time_it verify_sha1 "$shoal" verify "$work/sha.torrent" "$file"
  time_it b3sum b3sum "$file"
  time_it sha1sum sha1sum "$file"
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A med
for k in "${!times[@]}"; do med[$k]=$(echo "${times[$k]}" | median); done
gbps() { awk -v m="$size_mib" -v t="${med[$1]}" 'BEGIN {printf "%.2f", m * 1048576 / t / 1e9}'; }
ratio() { awk -v a="${med[$1]}" -v b="${med[$2]}" 'BEGIN {printf "%.2f", a / b}'; }

echo "file: ${size_mib} MiB in page cache, ${cores} cores, ${runs} runs each, median wall time"
echo
echo "| command | median s | GB/s | ratio |"
echo "| --- | --- | --- | --- |"
echo "| mktorrent -t $cores -l 20 | ${med[mktorrent]} | $(gbps mktorrent) | 1.00 (baseline) |"
echo "| shoal create (SHA-1 + blake3) | ${med[shoal_both]} | $(gbps shoal_both) | $(ratio shoal_both mktorrent)x mktorrent |"
echo "| shoal create --no-blake3 | ${med[shoal_sha1]} | $(gbps shoal_sha1) | $(ratio shoal_sha1 mktorrent)x mktorrent |"
echo "| shoal verify (blake3 torrent) | ${med[verify_b3]} | $(gbps verify_b3) | $(ratio verify_b3 b3sum)x b3sum |"
echo "| shoal verify (SHA-1 torrent) | ${med[verify_sha1]} | $(gbps verify_sha1) | $(ratio verify_sha1 sha1sum)x sha1sum |"
echo "| b3sum | ${med[b3sum]} | $(gbps b3sum) | |"
echo "| sha1sum | ${med[sha1sum]} | $(gbps sha1sum) | |"
