#!/usr/bin/env bash
# A/B comparison of two broker builds on the 100-pair run, alternating them so that the
# machine's drift hits both alike. For each run: delivered messages/s and the CPU time per
# delivered message of Postgres (all its processes), the broker and meshload, read from
# /proc (user + system, including exited children), which a shared noisy machine disturbs
# far less than the rates.
#
#   docs/ab.sh /tmp/old/broker /tmp/broker [rounds]
#
# Prerequisites as for docs/benchmarks.sh: /tmp/meshload built, the embedded cluster in
# /tmp/bench/pg; each run restarts the broker on 17901 with the build under test. Setup
# included (200 hellos and their announcements), so the figures are per message of a whole
# run, not of the steady state alone.
set -u
OLD=${1:?old broker binary}; NEW=${2:?new broker binary}; ROUNDS=${3:-3}
DSN="postgres://meshbroker@/meshbroker?host=/tmp/bench/pg.run&port=5432"
TICK=$(getconf CLK_TCK)
cpu() { local t=0 s; for p in $(pgrep "$@"); do s=$(awk '{print $14+$15+$16+$17}' /proc/$p/stat 2>/dev/null); t=$((t + ${s:-0})); done; echo "$t"; }
start() {
  pkill -INT -f "broker serve"; for _ in $(seq 40); do pgrep -f "broker serve" >/dev/null || break; sleep 0.5; done
  (cd /tmp/bench && BROKER_DATA_DIR=/tmp/bench/pg BROKER_PORT=17901 MAX_CONNECTIONS_PER_MESH=100000 MAX_PREAUTH_PER_IP=0 HELLO_IP_RATE_LIMIT_PER_MIN=0 MAX_HTTP_CONNS_PER_IP=0 \
    SEND_RATE_LIMIT_PER_MIN=0 LOG_LEVEL=warn "$1" serve > broker.log 2>&1 < /dev/null &)
  for _ in $(seq 60); do curl -sf 127.0.0.1:17901/health/ready >/dev/null && break; sleep 0.5; done
  sleep 1
}
for _ in $(seq "$ROUNDS"); do
  for which in old new; do
    bin=$NEW; [ $which = old ] && bin=$OLD
    start "$bin"
    pg0=$(cpu -x postgres); br0=$(cpu -f "broker serve")
    out=$(/usr/bin/time -f "ML %U %S" /tmp/meshload -dsn "$DSN" -url ws://127.0.0.1:17901/ws -pairs 100 -duration 10s -size 256 -window 8 2>&1 < /dev/null)
    sleep 2 # the audit chainer catches up
    pg1=$(cpu -x postgres); br1=$(cpu -f "broker serve")
    n=$(echo "$out" | grep '"delivered"' | tr -dc '0-9')
    rate=$(echo "$out" | grep deliveredPerSec | tr -dc '0-9.')
    ml=$(echo "$out" | grep '^ML' | awk '{print $2+$3}')
    lost=$(echo "$out" | grep '"lost"' | tr -dc '0-9')
    echo "$which: ${rate%.*}/s lost=$lost cpu µs/msg: postgres=$(( (pg1-pg0)*1000000/TICK/n )) broker=$(( (br1-br0)*1000000/TICK/n )) meshload=$(echo "$ml*1000000/$n" | bc)"
  done
done
