#!/usr/bin/env bash
# Side by side on this machine: Dovecot (Debian's dovecot-pop3d) and pop3d,
# each serving the same generated Maildirs on loopback, measured by the same
# load generator (pop3-load) in one run, then a table. Each server is pinned
# to CPU 1 and the load generator to CPU 0 (on a machine with two or more
# CPUs). Installs what it needs; run as root (Dovecot drops to a mail user).
#
#   pop3-load/compare.sh            the full figures (several minutes)
#   QUICK=1 pop3-load/compare.sh    small counts, to see that it works
#
# Figures: sessions/s (64 clients, connect/USER/PASS/STAT/QUIT, users stored
# {PLAIN}), RETR MB/s (8 clients x 100 messages of 1 MiB, LF-stored, every
# byte verified) against the raw loopback ceiling, memory per idle
# authenticated connection (PSS over the process tree), pipelined NOOPs/s.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-$([ -n "$QUICK" ] && echo 2 || echo 10)}
RETR_MESSAGES=$([ -n "$QUICK" ] && echo 10 || echo 100)
IDLE=${IDLE:-$([ -n "$QUICK" ] && echo 200 || echo 10000)}
PIPELINED=$([ -n "$QUICK" ] && echo 200000 || echo 2000000)
RUNS=${RUNS:-$([ -n "$QUICK" ] && echo 1 || echo 3)}
DOVECOT_PORT=21110
POP3D_PORT=21111

if ! command -v dovecot >/dev/null || [ ! -e /usr/lib/dovecot/pop3 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-pop3d
fi
# Each server holds IDLE logged-in connections, and a connection takes
# descriptors (pop3d: its socket and its lock file); run as root, the
# script raises the hard limit for the servers it starts, as an operator
# would with systemd's LimitNOFILE=. The load generator raises its own
# soft limit.
WANT_FDS=$((IDLE * 4 + 1024))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$WANT_FDS" ]; then
  ulimit -Hn "$WANT_FDS" 2>/dev/null ||
    echo "note: the hard descriptor limit ($(ulimit -Hn)) is below $WANT_FDS; idle figures may stop short" >&2
fi
id pop3bench >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin pop3bench

cargo build --release -q -p pop3d -p pop3-load
TARGET=${CARGO_TARGET_DIR:-target}
POP3D=$TARGET/release/pop3d
LOAD=$TARGET/release/pop3-load

if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=(taskset -c 1); LOAD_CPU=(taskset -c 0); else SERVER_CPU=(); LOAD_CPU=(); fi
load() { "${LOAD_CPU[@]}" "$LOAD" "$@"; }

WORK=$(mktemp -d /tmp/pop3-compare.XXXXXX)
cleanup() {
  [ -n "${KEEP:-}" ] && { echo "kept $WORK"; return; }
  [ -n "${DOVECOT_PID:-}" ] && kill "$DOVECOT_PID" 2>/dev/null || true
  [ -n "${POP3D_PID:-}" ] && kill "$POP3D_PID" 2>/dev/null || true
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

# Three corpora: many small sessions, large messages, many idle users.
"$LOAD" maildir --root "$WORK/sessions/mail" --users-file "$WORK/sessions/users" --users 64 --messages 3 --size 4096 >/dev/null
"$LOAD" maildir --root "$WORK/retr/mail" --users-file "$WORK/retr/users" --users 8 --messages "$RETR_MESSAGES" --size 1048576 >/dev/null
"$LOAD" maildir --root "$WORK/idle/mail" --users-file "$WORK/idle/users" --users "$IDLE" --messages 1 --size 1024 >/dev/null
chown -R pop3bench: "$WORK"
# Dovecot's auth process reads the users files as its own user.
chmod 755 "$WORK"
chmod 644 "$WORK"/*/users

start_dovecot() { # corpus
  local dir=$WORK/dovecot-$1
  mkdir -p "$dir/run" "$dir/state"
  cat >"$dir/dovecot.conf" <<EOF
protocols = pop3
listen = 127.0.0.1
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:$WORK/$1/mail/%u
pop3_uidl_format = %08Xu%08Xv
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN $WORK/$1/users
}
userdb {
  driver = static
  args = uid=pop3bench gid=pop3bench home=$WORK/$1/mail/%u
}
# Dovecot's own high-performance login mode: long-lived login processes.
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DOVECOT_PORT
  }
  service_count = 0
  process_min_avail = 1
  client_limit = 20000
}
service pop3 {
  process_limit = 20000
  client_limit = 1
}
service anvil {
  client_limit = 30000
}
default_client_limit = 30000
default_process_limit = 20000
mail_max_userip_connections = 100000
EOF
  ulimit -n "$(ulimit -Hn)"
  "${SERVER_CPU[@]}" dovecot -F -c "$dir/dovecot.conf" &
  DOVECOT_PID=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$DOVECOT_PORT) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "dovecot did not start; see $dir/dovecot.log" >&2
  cat "$dir/dovecot.log" >&2 || true
  exit 1
}

stop_dovecot() {
  kill "$DOVECOT_PID"
  wait "$DOVECOT_PID" 2>/dev/null || true
  DOVECOT_PID=
}

start_pop3d() { # corpus
  ulimit -n "$(ulimit -Hn)"
  RUST_LOG=warn "${SERVER_CPU[@]}" "$POP3D" --maildir-root "$WORK/$1/mail" --users "$WORK/$1/users" \
    --listen 127.0.0.1:$POP3D_PORT --max-connections 20000 --max-connections-per-ip 20000 \
    --max-unauthenticated 20000 >/dev/null 2>"$WORK/pop3d-$1.log" &
  POP3D_PID=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$POP3D_PORT) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "pop3d did not start" >&2
  exit 1
}

stop_pop3d() {
  kill "$POP3D_PID"
  wait "$POP3D_PID" 2>/dev/null || true
  POP3D_PID=
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RESULT
measure() { # server corpus
  local server=$1 corpus=$2 port pid
  if [ "$server" = dovecot ]; then start_dovecot "$corpus"; port=$DOVECOT_PORT; pid=$DOVECOT_PID
  else start_pop3d "$corpus"; port=$POP3D_PORT; pid=$POP3D_PID; fi
  case $corpus in
    sessions)
      load sessions --addr 127.0.0.1:$port --clients 64 --users 64 --seconds 1 >/dev/null # warm-up
      local out; out=$(load sessions --addr 127.0.0.1:$port --clients 64 --users 64 --seconds "$SECONDS_PER_RUN")
      echo "  $server: $out"
      RESULT[$server-sessions]+="$(sed -E 's/.*= ([0-9]+)\/s.*/\1/' <<<"$out") "
      RESULT[$server-p50]+="$(sed -E 's/.*p50 ([0-9.]+) ms.*/\1/' <<<"$out") "
      RESULT[$server-p99]+="$(sed -E 's/.*p99 ([0-9.]+) ms.*/\1/' <<<"$out") "
      ;;
    retr)
      load retr --addr 127.0.0.1:$port --clients 8 --messages "$RETR_MESSAGES" --size 1048576 --rounds 1 >/dev/null # warm-up
      local out; out=$(load retr --addr 127.0.0.1:$port --clients 8 --messages "$RETR_MESSAGES" --size 1048576 --rounds 1 | tail -1)
      echo "  $server: $out"
      RESULT[$server-retr]+="$(sed -E 's/.*median ([0-9]+) MB.*/\1/' <<<"$out") "
      out=$(load pipeline --addr 127.0.0.1:$port --commands "$PIPELINED")
      echo "  $server: $out"
      RESULT[$server-pipeline]+="$(sed -E 's/.*= ([0-9]+) commands.*/\1/' <<<"$out") "
      ;;
    idle)
      local out; out=$(load idle --addr 127.0.0.1:$port --connections "$IDLE" --pid "$pid" --hold 2)
      echo "  $server: $out"
      RESULT[$server-idle]+="$(sed -E 's/.* ([0-9.]+) KiB PSS and.*/\1/' <<<"$out") "
      ;;
  esac
  if [ "$server" = dovecot ]; then stop_dovecot; else stop_pop3d; fi
}

for run in $(seq "$RUNS"); do
  echo "== run $run of $RUNS"
  for corpus in sessions retr idle; do
    for server in dovecot pop3d; do
      measure "$server" "$corpus"
    done
  done
  out=$(load raw --clients 8 --bytes $((RETR_MESSAGES * 1048576)))
  echo "  raw: $out"
  RESULT[raw]+="$(sed -E 's/.*= ([0-9]+) MB\/s.*/\1/' <<<"$out") "
done

m() { tr ' ' '\n' <<<"${RESULT[$1]}" | grep . | median; }
echo
echo "Medians of $RUNS interleaved runs on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)):"
echo
echo "| figure | Dovecot $(dovecot --version | cut -d' ' -f1) | pop3d |"
echo "|---|---|---|"
echo "| sessions/s, 64 clients (p50 / p99 ms) | $(m dovecot-sessions) ($(m dovecot-p50) / $(m dovecot-p99)) | $(m pop3d-sessions) ($(m pop3d-p50) / $(m pop3d-p99)) |"
echo "| RETR MB/s, 8 clients x $RETR_MESSAGES x 1 MiB (raw loopback: $(m raw)) | $(m dovecot-retr) | $(m pop3d-retr) |"
echo "| KiB PSS per idle authenticated connection, $IDLE held | $(m dovecot-idle) | $(m pop3d-idle) |"
echo "| pipelined NOOPs/s, one connection | $(m dovecot-pipeline) | $(m pop3d-pipeline) |"
