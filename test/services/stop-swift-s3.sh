#!/usr/bin/env bash
# stop-swift-s3.sh [DATA_DIR] [--purge] — stops what start-swift-s3.sh started, by the PIDs
# in DATA_DIR/run (each file holds "PID STARTTIME", checked against /proc first), unmounts
# the tmpfs/loop device if start mounted one, and with --purge deletes DATA_DIR.
set -uo pipefail
DIR=/tmp/sfs-test-services/swift PURGE=
for a in "$@"; do case $a in --purge) PURGE=1 ;; *) DIR=$a ;; esac; done
DIR=$(realpath -m "$DIR")
pstart() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; [ "$1" != Z ] && echo "${20}"; }
for n in proxy object container account memcached; do
  f="$DIR/run/$n.pid"
  [ -s "$f" ] || continue
  read -r pid st <"$f"
  if [ -n "$pid" ] && [ "$(pstart "$pid")" = "$st" ]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do [ "$(pstart "$pid")" = "$st" ] || break; sleep 0.1; done
    [ "$(pstart "$pid")" = "$st" ] && kill -KILL "$pid" 2>/dev/null
    echo "stopped $n (pid $pid)"
  fi
  rm -f "$f"
done
if mountpoint -q "$DIR/srv/node/d1"; then umount "$DIR/srv/node/d1" && echo "unmounted $DIR/srv/node/d1"; fi
if [ -n "$PURGE" ]; then
  if mountpoint -q "$DIR/srv/node/d1" || [ "$DIR" = / ]; then echo "not purging $DIR" >&2; exit 1; fi
  rm -rf "$DIR" && echo "removed $DIR"
fi
exit 0
