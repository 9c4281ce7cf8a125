#!/usr/bin/env bash
# A/B comparison of two broker builds on the 100-pair run, alternating them so that the
# machine's drift hits both alike. For each run: delivered messages/s and the CPU time per
# delivered message of Postgres (all its processes), the broker and meshload, read from
# /proc (user + system, including exited children), which a shared noisy machine disturbs
# far less than the rates.
#
#   docs/ab.sh /tmp/old/broker /tmp/broker [rounds]
#   LOAD="-broadcast 50 -duration 10s -size 256 -window 8" docs/ab.sh …   # per broadcast delivery
#
# Prerequisites as for docs/benchmarks.sh: /tmp/meshload built, /tmp/bench (the embedded
# cluster in /tmp/bench/pg is created by the first run), and nothing else on port 17901 (stop
# Setup's broker first). Each run starts the build under test on 17901 and stops it after —
# only the broker this script started, and the CPU is read from it and from the
# /tmp/bench cluster's postmaster and its children: the machine is shared, other people's
# brokers and clusters are neither stopped nor counted. Setup included (200 hellos and
# their announcements), so the figures are per message of a whole run, not of the steady
# state alone.
set -u
OLD=${1:?old broker binary}; NEW=${2:?new broker binary}; ROUNDS=${3:-3}
LOAD=${LOAD:--pairs 100 -duration 10s -size 256 -window 8}
DSN="postgres://meshbroker@/meshbroker?host=/tmp/bench/pg.run&port=5432"
TICK=$(getconf CLK_TCK)
# CPU ticks (user + system, with waited-for children) of the given process ids.
cpu() { local t=0 s; for p in "$@"; do s=$(awk '{print $14+$15+$16+$17}' /proc/$p/stat 2>/dev/null); t=$((t + ${s:-0})); done; echo "$t"; }
# The benchmark cluster's postmaster and its children (never other clusters on the machine).
pgpids() { local pm; pm=$(head -1 /tmp/bench/pg/postmaster.pid 2>/dev/null) && echo "$pm $(pgrep -P "$pm" | tr '\n' ' ')"; }
BPID=""
# start stops the broker this script started (only that one: the machine is shared) and
# starts the build under test.
start() {
  if [ -n "$BPID" ]; then kill -INT "$BPID" 2>/dev/null; for _ in $(seq 40); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.5; done; fi
  cd /tmp/bench || exit 1
  env BROKER_DATA_DIR=/tmp/bench/pg BROKER_PORT=17901 MAX_CONNECTIONS_PER_MESH=100000 MAX_PREAUTH_PER_IP=0 HELLO_IP_RATE_LIMIT_PER_MIN=0 MAX_HTTP_CONNS_PER_IP=0 \
    SEND_RATE_LIMIT_PER_MIN=0 LOG_LEVEL=warn "$1" serve > broker.log 2>&1 < /dev/null &
  BPID=$!
  cd - > /dev/null || exit 1
  for _ in $(seq 60); do curl -sf 127.0.0.1:17901/health/ready >/dev/null && break; sleep 0.5; done
  sleep 1
}
trap '[ -n "$BPID" ] && kill -INT "$BPID" 2>/dev/null' EXIT
for _ in $(seq "$ROUNDS"); do
  for which in old new; do
    bin=$NEW; [ $which = old ] && bin=$OLD
    start "$bin"
    pg0=$(cpu $(pgpids)); br0=$(cpu "$BPID")
    out=$(/usr/bin/time -f "ML %U %S" /tmp/meshload -dsn "$DSN" -url ws://127.0.0.1:17901/ws $LOAD 2>&1 < /dev/null)
    sleep 2 # the audit chainer catches up
    pg1=$(cpu $(pgpids)); br1=$(cpu "$BPID")
    n=$(echo "$out" | grep '"delivered"' | tr -dc '0-9')
    rate=$(echo "$out" | grep deliveredPerSec | tr -dc '0-9.')
    ml=$(echo "$out" | grep '^ML' | awk '{print $2+$3}')
    lost=$(echo "$out" | grep '"lost"' | tr -dc '0-9')
    echo "$which: ${rate%.*}/s lost=$lost cpu µs/msg: postgres=$(( (pg1-pg0)*1000000/TICK/n )) broker=$(( (br1-br0)*1000000/TICK/n )) meshload=$(echo "$ml*1000000/$n" | bc)"
  done
done
