#!/usr/bin/env bash
# NFS re-export of a plyfs mount through nfs-ganesha's VFS backend, in a private network (and
# mount) namespace on loopback: read and write it with the libnfs tools over NFSv3 and v4, then
# check that raw NFSv3 handles taken before a ganesha restart and a drop_caches still read (the
# plyfs daemon answers the kernel's LOOKUP(id, ".")), and that the handle of a deleted file gives
# NFS3ERR_STALE, next to a live one that reads.
#
#   tests/nfs/ganesha.sh PLYFS_BINARY        (root; needs ganesha.nfsd, rpcbind, nfs-ls, unshare)
#
# Prints one line per check and "N passed, N failed"; exits non-zero when a check failed. Leaves
# no mount and no process behind.
set -uo pipefail
PLYFS=${1:?usage: ganesha.sh PLYFS_BINARY}
HERE=$(cd "$(dirname "$0")" && pwd)

if [[ ${PLYFS_NFS_INNER:-} != 1 ]]; then
    T=$(mktemp -d /tmp/plyfs-nfs.XXXXXX)
    mkdir -p "$T"/{lower/d/sub,upper,work,mnt}
    echo hello >"$T/lower/hello"
    echo two >"$T/lower/d/sub/file2"
    echo victim >"$T/lower/victim"
    trap 'rm -rf "$T"' EXIT
    # The mounts live in the private mount namespace: they go with it, whatever happens.
    PLYFS_NFS_INNER=1 T=$T unshare --net --mount --propagation private "$0" "$PLYFS"
    exit $?
fi

# ---- inside the namespaces ----
pass=0 fail=0
check() { # NAME EXPECTED ACTUAL
    if [[ $2 == "$3" ]]; then
        pass=$((pass + 1)); echo "ok   $1"
    else
        fail=$((fail + 1)); echo "FAIL $1: expected [$2], got [$3]"
    fi
}
mount_plyfs() {
    PLYFS_LOG=plyfs::reconnect=debug PLYFS_LOG_FILE="$T/plyfs.log" \
        "$PLYFS" -o "lowerdir=$T/lower,upperdir=$T/upper,workdir=$T/work" "$T/mnt"
}
mount_plyfs || { echo "plyfs did not mount"; exit 1; }
trap 'umount "$T/mnt"' EXIT
mount -t tmpfs tmpfs /run
mkdir -p /run/rpcbind /var/lib/nfs/ganesha
ip link set lo up
rpcbind -w 2>/dev/null || rpcbind
cat >"$T/ganesha.conf" <<EOF
NFS_CORE_PARAM { Protocols = 3, 4; NFS_Port = 2049; MNT_Port = 20048;
                 Enable_NLM = false; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; RecoveryBackend = fs; }
EXPORT {
    Export_Id = 1; Path = $T/mnt; Pseudo = /plyfs; Access_Type = RW;
    Squash = No_Root_Squash; Protocols = 3, 4; Transports = TCP; SecType = sys;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
EOF
GPID=
start_ganesha() {
    ganesha.nfsd -F -f "$T/ganesha.conf" -L "$T/ganesha.log" -p /run/ganesha.pid &
    GPID=$!
    for _ in $(seq 100); do
        python3 -c 'import socket; socket.create_connection(("127.0.0.1", 2049), 1)' 2>/dev/null && return 0
        sleep 0.1
    done
    echo "ganesha did not start:"; tail -5 "$T/ganesha.log"; return 1
}
stop_ganesha() { [[ -n $GPID ]] && kill "$GPID" 2>/dev/null && wait "$GPID" 2>/dev/null; GPID=; }
trap 'stop_ganesha; pkill -x rpcbind; umount "$T/mnt"' EXIT
start_ganesha || exit 1

V3="nfs://127.0.0.1$T/mnt"
V4="nfs://127.0.0.1/plyfs"
names() { nfs-ls "$1" 2>&1 | awk '{print $NF}' | sort | tr '\n' ' '; }
check "NFSv3 lists the merged root" "d hello victim " "$(names "$V3?version=3")"
check "NFSv4 lists the merged root" "d hello victim " "$(names "$V4?version=4")"
check "NFSv3 reads a lower file" "two" "$(nfs-cat "$V3/d/sub/file2?version=3" 2>&1)"
check "NFSv4 reads a lower file" "hello" "$(nfs-cat "$V4/hello?version=4" 2>&1)"

echo "written over nfs" >"$T/local"
nfs-cp "$T/local" "$V3/new?version=3" >/dev/null 2>&1
check "NFSv3 write lands in the upper layer" "written over nfs" "$(cat "$T/upper/new" 2>&1)"
check "and is seen through the mount" "written over nfs" "$(cat "$T/mnt/new" 2>&1)"

# Raw handles, taken before the restart; then a copy-up and a delete through the mount.
NFS3="python3 $HERE/nfs3.py"
H_TWO=$($NFS3 handle 127.0.0.1 "$T/mnt" d/sub/file2)
H_HELLO=$($NFS3 handle 127.0.0.1 "$T/mnt" hello)
H_VICTIM=$($NFS3 handle 127.0.0.1 "$T/mnt" victim)
check "three raw NFSv3 handles taken" "3" "$(printf '%s\n' "$H_TWO" "$H_HELLO" "$H_VICTIM" | grep -c .)"
echo "hello copied up" >"$T/mnt/hello"
rm "$T/mnt/victim"

stop_ganesha
sync
echo 3 >/proc/sys/vm/drop_caches
: >"$T/plyfs.log"
start_ganesha || exit 1
check "a handle taken before the restart reads" "two" "$($NFS3 read 127.0.0.1 "$H_TWO" 2>&1)"
check "a lower file's handle reads its upper copy" "hello copied up" "$($NFS3 read 127.0.0.1 "$H_HELLO" 2>&1)"
check "a deleted file's handle is stale" "NFS3ERR 70" "$($NFS3 read 127.0.0.1 "$H_VICTIM" 2>&1)"
check "the live one next to it still reads" "two" "$($NFS3 read 127.0.0.1 "$H_TWO" 2>&1)"
check "plyfs answered LOOKUP(id, \".\")" "yes" \
    "$(grep -q 'decoded id=' "$T/plyfs.log" && echo yes || echo no)"
# A plyfs remount (in this mount namespace): ganesha's handles carry the mount's st_dev, so an
# old handle can only hold when the new mount got the same st_dev back; check it then.
DEV=$(stat -c %d "$T/mnt")
stop_ganesha
umount "$T/mnt"
mount_plyfs || { echo "plyfs did not mount again"; exit 1; }
if [[ $(stat -c %d "$T/mnt") == "$DEV" ]]; then
    start_ganesha || exit 1
    check "a handle taken before a plyfs remount reads" "two" "$($NFS3 read 127.0.0.1 "$H_TWO" 2>&1)"
    check "and a deleted one is still stale" "NFS3ERR 70" "$($NFS3 read 127.0.0.1 "$H_VICTIM" 2>&1)"
else
    echo "skip the remount checks: st_dev changed ($DEV -> $(stat -c %d "$T/mnt"))"
fi
echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
