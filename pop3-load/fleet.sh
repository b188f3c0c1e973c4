#!/usr/bin/env bash
# pop3d behind HAProxy on one PostgreSQL store: 1 instance vs N instances,
# measured by pop3-load through HAProxy (PROXY v2, as in the README's
# "Running several instances"). Sets everything up in a temporary
# directory and removes it at the end:
#   - a throwaway PostgreSQL cluster (initdb; as root it runs as the
#     postgres user, else nobody), fsync off, on 127.0.0.1;
#   - two databases: "sessions" (64 users x 3 messages of 4 KiB) and
#     "retr" (8 users x RETR_MESSAGES messages of 1 MiB), each filled
#     with pop3-load maildir, pop3d user import and pop3d import;
#   - for each instance count: that many `pop3d --store` instances and a
#     haproxy in TCP mode (leastconn, send-proxy-v2, health checks).
# Figures: sessions/s with p50/p99 (64 clients, connect/USER/PASS/STAT/QUIT
# for SECONDS_PER_RUN s), and RETR MB/s (8 clients x RETR_MESSAGES messages
# of 1 MiB, every byte verified, median of 3 rounds). Everything shares
# this machine's CPUs (pop3-load, haproxy, the instances, PostgreSQL).
#
#   pop3-load/fleet.sh                 RUNS=3, instance counts "1 3"
#   QUICK=1 pop3-load/fleet.sh         one short run, to see that it works
#   COUNTS="1 2 3" RUNS=5 pop3-load/fleet.sh
#
# Needs haproxy and PostgreSQL's server binaries (Debian: haproxy,
# postgresql; installed when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-}
RUNS=${RUNS:-$([ -n "$QUICK" ] && echo 1 || echo 3)}
COUNTS=${COUNTS:-1 3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-$([ -n "$QUICK" ] && echo 2 || echo 10)}
RETR_MESSAGES=${RETR_MESSAGES:-$([ -n "$QUICK" ] && echo 4 || echo 50)}
BASE_PORT=${BASE_PORT:-23110} # haproxy; instances above it; PostgreSQL at +50

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
  [ -x "$d/initdb" ] && echo "$d"
}
missing=()
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
[ -n "$(pg_bin)" ] || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "fleet.sh: install ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
PG=$(pg_bin)

[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p pop3d -p pop3-load
TARGET=${CARGO_TARGET_DIR:-target}
POP3D=$TARGET/release/pop3d
LOAD=$TARGET/release/pop3-load

WORK=$(mktemp -d /tmp/pop3-fleet.XXXXXX)
PIDS=()
stop_fleet() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_fleet
  # The postmaster itself (PG_PID is the shell that started it): a fast
  # shutdown.
  if [ -n "${PG_PID:-}" ]; then
    [ -s "$WORK/pg/data/postmaster.pid" ] && kill -INT "$(head -1 "$WORK/pg/data/postmaster.pid")" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
  fi
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# PostgreSQL refuses to run as root: as root the cluster is another user's.
if [ "$(id -u)" -eq 0 ]; then
  PG_USER=$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)
  as_pg() { runuser -u "$PG_USER" -- "$@"; }
else
  as_pg() { "$@"; }
fi
chmod 755 "$WORK"
mkdir "$WORK/pg"
[ "$(id -u)" -eq 0 ] && chown "$PG_USER" "$WORK/pg"
PG_PORT=$((BASE_PORT + 50))
as_pg "$PG/initdb" --auth=trust --username=pop3 --no-sync --encoding=UTF8 --locale=C -D "$WORK/pg/data" >/dev/null
as_pg "$PG/postgres" -D "$WORK/pg/data" -p "$PG_PORT" -h 127.0.0.1 -k "$WORK/pg" \
  -c fsync=off -c max_connections=200 -c shared_buffers=128MB 2>"$WORK/pg/log" &
PG_PID=$!
for _ in $(seq 100); do
  as_pg "$PG/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 0.1
done
as_pg "$PG/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { cat "$WORK/pg/log"; exit 1; }
url() { echo "postgres://pop3@127.0.0.1:$PG_PORT/$1"; }

fill() { # database users messages size
  as_pg "$PG/createdb" -h 127.0.0.1 -p "$PG_PORT" -U pop3 "$1"
  "$POP3D" db migrate --store "$(url "$1")" >/dev/null
  "$LOAD" maildir --root "$WORK/$1/mail" --users-file "$WORK/$1/users" \
    --users "$2" --messages "$3" --size "$4" >/dev/null
  "$POP3D" user import --store "$(url "$1")" "$WORK/$1/users" >/dev/null
  RUST_LOG=warn "$POP3D" import --store "$(url "$1")" --maildir-root "$WORK/$1/mail" >/dev/null
  rm -rf "$WORK/$1/mail"
}
echo "filling the databases..."
fill sessions 64 3 4096
fill retr 8 "$RETR_MESSAGES" 1048576

start_fleet() { # database instances
  local i port cfg="$WORK/haproxy.cfg"
  cat >"$cfg" <<EOF
global
    maxconn 4000

defaults
    mode tcp
    timeout connect 5s
    timeout client 11m
    timeout server 11m

frontend pop3
    bind 127.0.0.1:$BASE_PORT
    default_backend pop3d

backend pop3d
    balance leastconn
    option tcp-check
    tcp-check connect send-proxy
    tcp-check expect string +OK
    tcp-check send "QUIT\r\n"
    tcp-check expect string +OK
EOF
  for i in $(seq "$2"); do
    port=$((BASE_PORT + i))
    # All load comes from 127.0.0.1, which the PROXY headers name: lift
    # the per-address limits (logins being checked count against the
    # failed-login limit until answered, and 64 clients log in at once).
    RUST_LOG=warn "$POP3D" --store "$(url "$1")" --listen "127.0.0.1:$port" \
      --proxy-from 127.0.0.1 --max-connections-per-ip 10000 --max-connections 10000 \
      --max-failed-logins-per-ip 0 \
      >"$WORK/pop3d-$i.out" 2>"$WORK/pop3d-$i.log" &
    PIDS+=($!)
    echo "    server pop3d-$i 127.0.0.1:$port send-proxy-v2 check inter 5s" >>"$cfg"
  done
  for i in $(seq "$2"); do
    for _ in $(seq 100); do grep -q 'listening on' "$WORK/pop3d-$i.out" && break; sleep 0.1; done
    grep -q 'listening on' "$WORK/pop3d-$i.out" || { cat "$WORK/pop3d-$i.log"; exit 1; }
  done
  "$HAPROXY" -f "$cfg" -db >"$WORK/haproxy.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    if { exec 3<>"/dev/tcp/127.0.0.1/$BASE_PORT"; } 2>/dev/null; then
      local greeting=""
      read -r -t 2 greeting <&3 || true
      printf 'QUIT\r\n' >&3 || true
      exec 3<&- 3>&-
      case $greeting in "+OK"*) return ;; esac
    fi
    sleep 0.1
  done
  echo "haproxy did not pass sessions:" >&2
  cat "$WORK/haproxy.log" >&2
  exit 1
}

FRONT=127.0.0.1:$BASE_PORT
RESULTS=$WORK/results
: >"$RESULTS"
for run in $(seq "$RUNS"); do
  for n in $COUNTS; do
    start_fleet sessions "$n"
    s=$("$LOAD" sessions --addr "$FRONT" --clients 64 --users 64 --seconds "$SECONDS_PER_RUN")
    echo "run $run, $n instance(s): $s"
    stop_fleet
    start_fleet retr "$n"
    r=$("$LOAD" retr --addr "$FRONT" --clients 8 --messages "$RETR_MESSAGES" --size 1048576 --rounds 3 | tail -1)
    echo "run $run, $n instance(s): $r"
    stop_fleet
    rate=$(sed -E 's/.*= ([0-9.]+)\/s.*/\1/' <<<"$s")
    p50=$(sed -E 's/.*p50 ([0-9.]+) ms.*/\1/' <<<"$s")
    p99=$(sed -E 's/.*p99 ([0-9.]+) ms.*/\1/' <<<"$s")
    errors=$(sed -E 's/.*; ([0-9]+) errors.*/\1/' <<<"$s")
    mbs=$(sed -E 's/.*median ([0-9.]+) MB\/s.*/\1/' <<<"$r")
    echo "$n $run $rate $p50 $p99 $errors $mbs" >>"$RESULTS"
  done
done

echo
echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $RUNS run(s); load, haproxy, pop3d and PostgreSQL share them"
printf '%-10s %-4s %12s %9s %9s %7s %10s\n' instances run sessions/s p50_ms p99_ms errors RETR_MB/s
sort -n -k1 -k2 "$RESULTS" | while read -r n run rate p50 p99 errors mbs; do
  printf '%-10s %-4s %12s %9s %9s %7s %10s\n' "$n" "$run" "$rate" "$p50" "$p99" "$errors" "$mbs"
done
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for n in $COUNTS; do
  col() { awk -v n="$n" -v c="$1" '$1 == n {print $c}' "$RESULTS" | median; }
  printf '%-10s %-4s %12s %9s %9s %7s %10s\n' "$n" median "$(col 3)" "$(col 4)" "$(col 5)" "$(col 6)" "$(col 7)"
done
