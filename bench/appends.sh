#!/usr/bin/env bash
# bench/appends.sh: how long N small unbuffered appends to one file take on an overlay, side by
# side on several implementations (a log writer: one write() each, the file on the upper layer).
#
#   bench/appends.sh [-n WRITES] [-r RUNS] NAME=MOUNTER ...
#
# NAME=kernel mounts the kernel's overlay; NAME=/path/to/prog a FUSE overlay taking
# fuse-overlayfs style arguments (prog -o lowerdir=L,upperdir=U,workdir=W MNT). Prints the
# median seconds of RUNS runs per implementation (taking turns) and its ratio to the first.
# Needs root and python3. Example:
#   bench/appends.sh kernel=kernel plyfs=target/release/plyfs fuse-overlayfs=/usr/bin/fuse-overlayfs
set -euo pipefail
WRITES=20000 RUNS=3
while getopts "n:r:" o; do case $o in n) WRITES=$OPTARG;; r) RUNS=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND-1))
(( $# >= 1 )) || { sed -n 2,11p "$0"; exit 2; }
[[ $(id -u) == 0 ]] || { echo "appends.sh: needs root" >&2; exit 2; }
base=$(mktemp -d /var/tmp/plyfs-appends.XXXXXX)
mnt=$base/mnt
cleanup() { mountpoint -q "$mnt" && umount "$mnt"; rm -rf "$base"; }
trap cleanup EXIT
one() { # mounter -> seconds
  rm -rf "$base/l" "$base/u" "$base/w"; mkdir -p "$base/l" "$base/u" "$base/w" "$mnt"
  local opts="lowerdir=$base/l,upperdir=$base/u,workdir=$base/w"
  if [[ $1 == kernel ]]; then mount -t overlay overlay -o "$opts" "$mnt"; else "$1" -o "$opts" "$mnt"; fi
  for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.05; done
  python3 - "$mnt/log" "$WRITES" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
start = time.perf_counter()
for i in range(int(sys.argv[2])):
    os.write(fd, b"a log line of some length %d\n" % i)
print("%.4f" % (time.perf_counter() - start))
os.close(fd)
PY
  sync; umount "$mnt"
}
names=(); declare -A got=()
for a in "$@"; do names+=("${a%%=*}"); done
for _ in $(seq "$RUNS"); do
  for a in "$@"; do got[${a%%=*}]+="$(one "${a#*=}") "; done
done
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
first=$(echo "${got[${names[0]}]}" | median)
for n in "${names[@]}"; do
  m=$(echo "${got[$n]}" | median)
  printf "%-16s %8s s  %6s\n" "$n" "$m" "$(awk -v a="$m" -v b="$first" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }')"
done
