#!/usr/bin/env bash
# The benchmark series of docs/benchmarks.md, in order. Prerequisites (see the doc's Setup):
# /tmp/broker and /tmp/meshload built, a broker serving on 17901 with its embedded cluster in
# /tmp/bench/pg (MAX_CONNECTIONS_PER_MESH=100000 SEND_RATE_LIMIT_PER_MIN=0 MAX_PREAUTH_PER_IP=0 HELLO_IP_RATE_LIMIT_PER_MIN=0 MAX_HTTP_CONNS_PER_IP=0). L is measured
# with this repository's cmd/pglimits, built here into /tmp/pglimits.
set -u
(cd "$(dirname "$0")/.." && go build -o /tmp/pglimits ./cmd/pglimits) || exit 1
cd /tmp/bench
DSN="postgres://meshbroker@/meshbroker?host=/tmp/bench/pg.run&port=5432"
ML="/tmp/meshload -dsn $DSN"
U1=ws://127.0.0.1:17901/ws
U2=ws://127.0.0.1:17902/ws
limits() { timeout 60 /tmp/pglimits -dsn "$DSN" -test insert -c 16 -d 8s 2>&1 | tail -1; }
LINE=$(limits); echo "L: $LINE"
L=$(echo "$LINE" | sed 's/.*: \([0-9]*\) txn\/s.*/\1/')
echo "== T1 throughput"; $ML -url $U1 -pairs 100 -duration 10s -size 256 -window 8 2>/dev/null
echo "== T2a 500/s"; $ML -url $U1 -pairs 100 -rate 500 -duration 10s -size 256 2>/dev/null
R=$((L * 3 / 10)); echo "== T2b 0.3L = $R/s"; $ML -url $U1 -pairs 100 -rate $R -duration 10s -size 256 2>/dev/null
echo "== T2c burst 100"; $ML -url $U1 -pairs 100 -burst 100 -size 256 2>/dev/null
echo "== T4a broadcast 1->50"; $ML -url $U1 -broadcast 50 -duration 10s -size 256 -window 8 2>/dev/null
echo "== T4b broadcast 1->500 at 10/s"; $ML -url $U1 -broadcast 500 -rate 10 -duration 10s -size 256 2>/dev/null
DATABASE_URL="$DSN" BROKER_PORT=17902 MAX_CONNECTIONS_PER_MESH=100000 SEND_RATE_LIMIT_PER_MIN=0 MAX_PREAUTH_PER_IP=0 HELLO_IP_RATE_LIMIT_PER_MIN=0 MAX_HTTP_CONNS_PER_IP=0 LOG_LEVEL=warn /tmp/broker serve > broker2.log 2>&1 &
B2=$!
sleep 3
# A fresh instance prepares its statements on each pool connection as it first uses it:
# a 5 s run at the same rate warms both instances up, and is not reported.
$ML -url $U1,$U2 -pairs 100 -rate 500 -duration 5s -size 256 >/dev/null 2>&1
echo "== T3 two instances 500/s (every DM crosses instances)"; $ML -url $U1,$U2 -pairs 100 -rate 500 -duration 10s -size 256 2>/dev/null
echo "== T3 single instance 500/s (same run)"; $ML -url $U1 -pairs 100 -rate 500 -duration 10s -size 256 2>/dev/null
kill -INT $B2   # only the instance this script started
sleep 2
# The hello runs last but one: their 4 000 closing sockets end presences and announce
# peer_left for a while after meshload exits, which would disturb a run that follows at once.
echo "== T5 hellos + reconnect storm"; $ML -url $U1 -hellos 4000 -concurrency 200 -storm 2>/dev/null
sleep 15
echo "== T6 idle 10000"; $ML -url $U1 -idle 10000 -concurrency 200 -hold 10s 2>/dev/null
echo "L-after: $(limits)"
