#!/usr/bin/env bash
# bench/fuse-requests.sh: where a small-file create goes through a FUSE overlay. Creates N files
# (Python: open, write 1 KiB, close, as ovbench's create-small) in a new directory, traces every
# FUSE request with the kernel's fuse:fuse_request_send and fuse:fuse_request_end tracepoints, and
# prints, per opcode, how many and how long from send to end (what the caller waits for, except
# RELEASE, which it does not wait for), then a file's time and the caller's own part of it. The
# same loop on the kernel's overlay gives the time to compare with.
#
#   bench/fuse-requests.sh [-n FILES] [-d DIR] MOUNTER
#
# The layers and the mount point go in a new directory under DIR (default /var/tmp): put it on
# the filesystem to measure (a filesystem that recently had many files deleted makes creates
# slow for the next minute on ext4 without a journal, see the README).
#
# MOUNTER: a FUSE overlay taking fuse-overlayfs style arguments (prog -o lowerdir=L,upperdir=U,
# workdir=W MNT), e.g. target/release/plyfs. Needs root, python3 and perf (Debian: linux-perf).
set -euo pipefail
FILES=2000 DIR=/var/tmp
while getopts "n:d:" o; do case $o in n) FILES=$OPTARG;; d) DIR=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND-1))
(( $# == 1 )) || { sed -n 2,17p "$0"; exit 2; }
[[ $(id -u) == 0 ]] || { echo "fuse-requests.sh: needs root" >&2; exit 2; }
command -v perf >/dev/null || { echo "fuse-requests.sh: needs perf (linux-perf)" >&2; exit 2; }
base=$(mktemp -d "$DIR/plyfs-requests.XXXXXX")
mnt=$base/mnt
cleanup() { mountpoint -q "$mnt" && umount "$mnt"; rm -rf "$base"; }
trap cleanup EXIT

mount_one() { # mounter
  cleanup_mnt
  local opts="lowerdir=$base/l,upperdir=$base/u,workdir=$base/w"
  if [[ $1 == kernel ]]; then mount -t overlay overlay -o "$opts" "$mnt"; else "$1" -o "$opts" "$mnt"; fi
  for _ in $(seq 100); do mountpoint -q "$mnt" && return 0; sleep 0.05; done
  echo "fuse-requests.sh: $1 did not mount" >&2; exit 1
}
cleanup_mnt() {
  mountpoint -q "$mnt" && umount "$mnt"
  rm -rf "$base/l" "$base/u" "$base/w"; mkdir -p "$base/l" "$base/u" "$base/w" "$mnt"
}
create() { # prints microseconds a file
  python3 - "$mnt/new" "$FILES" <<'PY'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
start = time.perf_counter()
for i in range(n):
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(b"x" * 1024)
print("%.1f" % ((time.perf_counter() - start) / n * 1e6))
PY
}

mount_one kernel
kernel_us=$(create)
mount_one "$1"
trace=$base/trace.data
perf record -q -a -o "$trace" -e fuse:fuse_request_send -e fuse:fuse_request_end &
perf_pid=$!
sleep 1
traced_us=$(create)
kill -INT "$perf_pid"; wait "$perf_pid" || true
umount "$mnt"
perf script -i "$trace" -F time,event,trace >"$base/trace.txt" 2>/dev/null
python3 - "$kernel_us" "$traced_us" "$base/trace.txt" <<'PY'
import re, sys, collections
kernel_us, traced_us = float(sys.argv[1]), float(sys.argv[2])
sent, lat, cycles = {}, collections.defaultdict(list), []
for line in open(sys.argv[3]):
    m = re.match(r'\s*([\d.]+):\s+fuse:(\S+):.*?req (\d+)(.*)', line)
    if not m:
        continue
    t, ev, req, rest = float(m.group(1)), m.group(2), m.group(3), m.group(4)
    if ev == 'fuse_request_send':
        op = re.search(r'\((\w+)\)', rest).group(1)
        sent[req] = (t, op)
        if op == 'FUSE_CREATE':  # one a file
            cycles.append(t)
    elif req in sent:
        t0, op = sent.pop(req)
        lat[op].append((t - t0) * 1e6)
med = lambda v: sorted(v)[len(v) // 2]
waited = 0.0
print("%-16s %8s %10s %10s" % ("request", "count", "median us", "mean us"))
for op, v in sorted(lat.items(), key=lambda x: -len(x[1])):
    print("%-16s %8d %10.1f %10.1f" % (op, len(v), med(v), sum(v) / len(v)))
    if op != 'FUSE_RELEASE':
        waited += med(v) * len(v)
per_file = [(b - a) * 1e6 for a, b in zip(cycles, cycles[1:])]
if per_file:
    f = med(per_file)
    w = waited / max(len(cycles), 1)
    print("a file (median, CREATE to CREATE): %.1f us; in requests waited for: %.1f us;"
          " the caller's own: %.1f us" % (f, w, f - w))
print("a file on the kernel's overlay: %.1f us; through this mounter while traced: %.1f us" %
      (kernel_us, traced_us))
PY
