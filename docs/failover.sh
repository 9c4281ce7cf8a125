#!/usr/bin/env bash
# Delivery under SIGKILL (issue 11's "done when"): two brokers on one database, meshload
# -failover sending DMs across them at a steady rate, and every 10 s one of the two
# SIGKILLed — alternately, so each kill hits the instance holding the peers — and restarted
# 2 s later. meshload's peers reconnect to the surviving instance (taking their presences
# over inside the grace window), receivers acknowledge with client_ack, and a send whose
# socket was lost is repeated with its clientMessageId. The JSON result's "lost" must be 0;
# "duplicated" counts redeliveries. A third broker owns the embedded cluster and is never
# killed. Prerequisites: /tmp/broker and /tmp/meshload built from this repository
# (docs/benchmarks.md "Setup"); runs in /tmp/failover. DURATION (60s) and KILLS_MAX (5)
# shape the run; LOAD replaces the load (default "-pairs 50 -rate 1000"; broadcasts:
# LOAD="-broadcast 20 -rate 50", every push counted per receiver).
set -u
LIFT="MAX_CONNECTIONS_PER_MESH=100000 SEND_RATE_LIMIT_PER_MIN=0 MAX_PREAUTH_PER_IP=0 HELLO_IP_RATE_LIMIT_PER_MIN=0 MAX_HTTP_CONNS_PER_IP=0 LOG_LEVEL=warn"
rm -rf /tmp/failover && mkdir -p /tmp/failover && chmod 755 /tmp/failover && cd /tmp/failover || exit 1
DSN="postgres://meshbroker@/meshbroker?host=/tmp/failover/pg.run&port=5432"
ready() { for _ in $(seq 1 120); do curl -s "localhost:$1/health/ready" | grep -q '"ready"' && return 0; sleep 0.5; done; return 1; }
env $LIFT BROKER_DATA_DIR=/tmp/failover/pg BROKER_PORT=17910 /tmp/broker serve >> owner.log 2>&1 &
OWNER=$!
ready 17910 || { echo "the cluster's broker is not ready"; exit 1; }
declare -A PID
start() { env $LIFT DATABASE_URL="$DSN" BROKER_PORT="$1" /tmp/broker serve >> "$1.log" 2>&1 & PID[$1]=$!; ready "$1"; }
start 17911
start 17912
/tmp/meshload -dsn "$DSN" -url ws://127.0.0.1:17911/ws,ws://127.0.0.1:17912/ws ${LOAD:--pairs 50 -rate 1000} \
  -duration "${DURATION:-60s}" -failover -drain 60s > result.json 2> meshload.log &
ML=$!
KILLS=0
VICTIM=17912
while kill -0 $ML 2>/dev/null && [ $KILLS -lt "${KILLS_MAX:-5}" ]; do
  sleep 10
  kill -0 $ML 2>/dev/null || break
  kill -9 "${PID[$VICTIM]}" 2>/dev/null; wait "${PID[$VICTIM]}" 2>/dev/null
  KILLS=$((KILLS + 1)); echo "SIGKILL $KILLS: the instance on port $VICTIM, at $(date +%T)"
  sleep 2
  start $VICTIM
  if [ $VICTIM = 17912 ]; then VICTIM=17911; else VICTIM=17912; fi
done
wait $ML
kill -INT "${PID[17911]}" "${PID[17912]}" 2>/dev/null; sleep 2; kill -INT $OWNER; wait 2>/dev/null
grep -E 'failover|error' meshload.log | tail -3
cat result.json
