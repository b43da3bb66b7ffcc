#!/usr/bin/env bash
# start-swift-s3.sh [DATA_DIR] — a real OpenStack Swift (Debian 12 packages, 2.30.x),
# single node, 1 replica ("Swift All In One"), with the S3 API (s3api + tempauth).
# Idempotent: installs what is missing, reuses DATA_DIR, does nothing if already up.
# Prints KEY=VALUE lines (endpoint, region, keys) on stdout; progress goes to stderr.
# Env (all optional): SWIFT_S3_PORT=18080  SWIFT_BACKEND_PORT_BASE=16200 (object,
#   container, account = base, +1, +2)  SWIFT_MEMCACHED_PORT=11311  S3_ACCOUNT=test
#   S3_USER=tester  S3_SECRET=testing  S3_REGION=us-east-1
#   SWIFT_XATTR_FS=auto|dir|tmpfs|loop  (where object data lives; auto = DATA_DIR if it
#   takes user xattrs, else a tmpfs, else a loop-mounted ext4 image; dir = DATA_DIR or fail)
#   SWIFT_TMPFS_SIZE=2g  SWIFT_IMG_SIZE=4G  SWIFT_LOG_LEVEL=INFO
# DATA_DIR must be reachable by users swift and memcache (so not under /root).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "start-swift-s3.sh: run as root" >&2; exit 1; }
DIR=$(realpath -m "${1:-${SWIFT_DATA_DIR:-/tmp/sfs-test-services/swift}}")
PORT=${SWIFT_S3_PORT:-18080} BASE=${SWIFT_BACKEND_PORT_BASE:-16200}
OPORT=$BASE CPORT=$((BASE + 1)) APORT=$((BASE + 2)) MPORT=${SWIFT_MEMCACHED_PORT:-11311}
ACCT=${S3_ACCOUNT:-test} USR=${S3_USER:-tester} SECRET=${S3_SECRET:-testing}
REGION=${S3_REGION:-us-east-1} FSMODE=${SWIFT_XATTR_FS:-auto}
PY=/usr/bin/python3 # Debian's python3 (Swift's), not whatever python3 is first on PATH
log() { echo "[swift-s3 $(date +%T)] $*" >&2; }
mkdir -p "$DIR"/{etc,srv/node/d1,run,log}
T0=$(date +%s.%N)

# ---- 1. packages (policy-rc.d keeps their init scripts from starting daemons) ----
PKGS=(swift swift-proxy swift-account swift-container swift-object python3-swift memcached curl)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]} (log: $DIR/log/apt.log)"
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  aptopts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install "${aptopts[@]}" "${missing[@]}" >>"$DIR/log/apt.log" 2>&1; then
    log "install failed; apt-get update and retry"
    apt-get update -q >>"$DIR/log/apt.log" 2>&1 || true
    apt-get install "${aptopts[@]}" "${missing[@]}" >>"$DIR/log/apt.log" 2>&1 ||
      { [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d; tail -n 20 "$DIR/log/apt.log" >&2; exit 1; }
  fi
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

# ---- 2. already running? (run/NAME.pid holds "PID STARTTIME"; never find processes by name) ----
pstart() { # start time of a live (non-zombie) PID, from /proc/PID/stat
  local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s
  [ "$1" != Z ] && [ "$1" != X ] && echo "${20}"
}
ours() { # ours NAME: is the process recorded in run/NAME.pid alive?
  local pid st
  read -r pid st 2>/dev/null <"$DIR/run/$1.pid" || return 1
  [ -n "$pid" ] && [ "$(pstart "$pid")" = "$st" ]
}
s3_probe() { # S3 ListBuckets signed with AWS signature v2: s3api + tempauth + all backends
  "$PY" - "$PORT" "$ACCT:$USR" "$SECRET" 2>/dev/null <<'PYEOF'
import base64, email.utils, hashlib, hmac, sys, urllib.request
port, ak, sk = sys.argv[1:4]
date = email.utils.formatdate(usegmt=True)
sig = base64.b64encode(hmac.new(sk.encode(), ("GET\n\n\n%s\n/" % date).encode(), hashlib.sha1).digest()).decode()
req = urllib.request.Request("http://127.0.0.1:%s/" % port, headers={"Date": date, "Authorization": "AWS %s:%s" % (ak, sig)})
body = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5).read()
sys.exit(0 if b"ListAllMyBucketsResult" in body else 1)
PYEOF
}
print_env() {
  cat <<EOF
S3_ENDPOINT=http://127.0.0.1:$PORT
S3_REGION=$REGION
S3_ACCESS_KEY_ID=$ACCT:$USR
S3_SECRET_ACCESS_KEY=$SECRET
S3_FORCE_PATH_STYLE=true
AWS_ENDPOINT_URL_S3=http://127.0.0.1:$PORT
AWS_REGION=$REGION
AWS_ACCESS_KEY_ID=$ACCT:$USR
AWS_SECRET_ACCESS_KEY=$SECRET
AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED
AWS_RESPONSE_CHECKSUM_VALIDATION=WHEN_REQUIRED
EOF
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; } # needs no ss/netstat
NAMES=(memcached account container object proxy)
up=0
for n in "${NAMES[@]}"; do ours "$n" && up=$((up + 1)); done
if [ "$up" = ${#NAMES[@]} ] && s3_probe; then log "already running"; print_env; exit 0; fi
[ "$up" = 0 ] || { log "partly running: stopping the rest first"; "$(dirname "$0")/stop-swift-s3.sh" "$DIR" >&2; }
for p in "$PORT" "$OPORT" "$CPORT" "$APORT" "$MPORT"; do
  if port_busy "$p"; then log "port $p is already taken by another process"; exit 1; fi
done

# ---- 3. object device with user xattrs (Swift keeps object metadata in user.swift.*) ----
DEV="$DIR/srv/node/d1"
xattr_ok() { "$PY" - "$1" <<'PYEOF'
import os, sys, tempfile
fd, p = tempfile.mkstemp(dir=sys.argv[1])
try:
    os.setxattr(p, "user.swift.metadata", b"x" * 254)
    os.setxattr(p, "user.swift.metadata1", b"x" * 254)
finally:
    os.close(fd); os.unlink(p)
PYEOF
}
if mountpoint -q "$DEV"; then
  :
elif [ "$FSMODE" = dir ] || { [ "$FSMODE" = auto ] && xattr_ok "$DEV" 2>/dev/null; }; then
  :
else
  if [ "$FSMODE" = auto ] || [ "$FSMODE" = tmpfs ]; then
    log "putting $DEV on a tmpfs"
    mount -t tmpfs -o "size=${SWIFT_TMPFS_SIZE:-2g},mode=0755" tmpfs "$DEV"
    xattr_ok "$DEV" 2>/dev/null || { log "this kernel's tmpfs has no user xattrs"; umount "$DEV"; }
  fi
  if ! mountpoint -q "$DEV"; then
    log "putting $DEV on a loop-mounted ext4 image ($DIR/d1.img)"
    [ -f "$DIR/d1.img" ] || { truncate -s "${SWIFT_IMG_SIZE:-4G}" "$DIR/d1.img"; mkfs.ext4 -q -F -m 0 "$DIR/d1.img"; }
    mount -o loop "$DIR/d1.img" "$DEV"
  fi
fi
xattr_ok "$DEV" || { log "no user xattrs on $DEV: Swift's object server cannot work there"; exit 1; }
chown -R swift:swift "$DIR/srv"

# ---- 4. configs (rewritten on every start) ----
E="$DIR/etc"
cat >"$E/swift.conf" <<EOF
[swift-hash]
swift_hash_path_prefix = sfs-test-prefix
swift_hash_path_suffix = sfs-test-suffix
[storage-policy:0]
name = Policy-0
default = yes
[swift-constraints]
# Swift's default is 256 bytes per metadata value (longer ones fail as HTTP 500 via s3api);
# S3 allows 2 KB of user metadata in all
max_meta_value_length = 2048
EOF
# Swift 2.30 reads /etc/swift/swift.conf when its modules are imported (swift_dir only moves
# the rings), so the servers are run by this twin of /usr/bin/swift-*-server that points
# Swift at $E/swift.conf before anything reads it
cat >"$E/swift-server.py" <<'EOF'
import os, sys
import swift.common.utils as utils
name = sys.argv.pop(1)
utils.SWIFT_CONF_FILE = os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), "swift.conf")
from swift.common.wsgi import run_wsgi
conf_file, options = utils.parse_options()
sys.exit(run_wsgi(conf_file, name + "-server", **options))
EOF
common() { cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $1
workers = 0
user = swift
swift_dir = $E
devices = $DIR/srv/node
mount_check = false
log_level = ${SWIFT_LOG_LEVEL:-INFO}
EOF
}
for s in account:$APORT container:$CPORT object:$OPORT; do
  n=${s%%:*}
  { common "${s#*:}"; cat <<EOF
[pipeline:main]
pipeline = healthcheck $n-server
[app:$n-server]
use = egg:swift#$n
[filter:healthcheck]
use = egg:swift#healthcheck
EOF
  } >"$E/$n-server.conf"
done
{ common "$PORT"; cat <<EOF
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
[filter:s3api]
use = egg:swift#s3api
location = $REGION
[filter:tempauth]
use = egg:swift#tempauth
user_${ACCT}_${USR} = $SECRET .admin
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MPORT
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_object_versioning = true
[filter:symlink]
use = egg:swift#symlink
EOF
} >"$E/proxy-server.conf"

# ---- 5. rings: 1 device, 1 replica, 2^8 partitions; rebuilt only when ports change ----
stamp="$OPORT $CPORT $APORT"
if [ "$(cat "$E/rings.stamp" 2>/dev/null)" != "$stamp" ] ||
  [ ! -f "$E/object.ring.gz" ] || [ ! -f "$E/container.ring.gz" ] || [ ! -f "$E/account.ring.gz" ]; then
  log "building rings"
  for s in account:$APORT container:$CPORT object:$OPORT; do
    b="$E/${s%%:*}.builder"; rm -f "$b" "${b%.builder}.ring.gz"
    swift-ring-builder "$b" create 8 1 1 >/dev/null
    swift-ring-builder "$b" add --region 1 --zone 1 --ip 127.0.0.1 --port "${s#*:}" --device d1 --weight 100 >/dev/null
    swift-ring-builder "$b" rebalance >/dev/null || [ $? -eq 1 ] # exit 1 = warning only
  done
  echo "$stamp" >"$E/rings.stamp"
fi

# ---- 6. start. With workers = 0 (one process per server, no fork) Swift never drops
# privileges itself, so the servers are exec'ed as user swift by setpriv (no extra fork:
# $! is the server); memcached drops to user memcache itself (-u). ----
start() { # start NAME CMD...
  local n=$1; shift
  nohup "$@" >>"$DIR/log/$n.log" 2>&1 </dev/null &
  echo "$! $(pstart $!)" >"$DIR/run/$n.pid"
}
fail() { log "$1"; "$(dirname "$0")/stop-swift-s3.sh" "$DIR" >&2; exit 1; }
trap 'fail "failed at line $LINENO"' ERR
start memcached /usr/bin/memcached -u memcache -l 127.0.0.1 -p "$MPORT" -U 0 -m 64
for n in account container object proxy; do
  start "$n" setpriv --reuid=swift --regid=swift --init-groups "$PY" "$E/swift-server.py" "$n" "$E/$n-server.conf" -v
done

# ---- 7. wait until every server answers and a signed S3 request succeeds ----
ok=0
for _ in $(seq 1 240); do
  for n in "${NAMES[@]}"; do
    ours "$n" || { tail -n 20 "$DIR/log/$n.log" >&2; fail "$n died (its log is above)"; }
  done
  ok=1
  for p in "$APORT" "$CPORT" "$OPORT" "$PORT"; do
    curl --noproxy '*' -fsS -m 2 "http://127.0.0.1:$p/healthcheck" >/dev/null 2>&1 || { ok=0; break; }
  done
  [ $ok = 1 ] && s3_probe && break
  ok=0; sleep 0.25
done
[ $ok = 1 ] || { tail -n 5 "$DIR"/log/*.log >&2; fail "not ready after 60 s"; }
trap - ERR
log "ready in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $T0}") s"
print_env | tee "$DIR/s3.env"
