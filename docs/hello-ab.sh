#!/usr/bin/env bash
# Hello rates of two broker builds, alternating them on one embedded cluster (in /tmp/hbench,
# port 17951) so that the machine's drift hits both alike: L (pglimits, 5 s) then
# `meshload -hellos 4000 -concurrency 200 -storm` per run, two rounds. Builds in
# /tmp/hb-old and /tmp/hb-new; /tmp/meshload and /tmp/pglimits built from this repository.
# Swap "old new" for "new old" in the loop to start with the other build.
set -u
rm -rf /tmp/hbench && mkdir -p /tmp/hbench && chmod 755 /tmp/hbench && cd /tmp/hbench
DSN="postgres://meshbroker@/meshbroker?host=/tmp/hbench/pg.run&port=5432"
BPID=""
start() {
  if [ -n "$BPID" ]; then kill -INT $BPID; while kill -0 $BPID 2>/dev/null; do sleep 0.3; done; fi
  env BROKER_DATA_DIR=/tmp/hbench/pg BROKER_PORT=17951 MAX_CONNECTIONS_PER_MESH=100000 MAX_PREAUTH_PER_IP=0 HELLO_IP_RATE_LIMIT_PER_MIN=0 MAX_HTTP_CONNS_PER_IP=0 SEND_RATE_LIMIT_PER_MIN=0 LOG_LEVEL=warn "$1" serve > broker.log 2>&1 < /dev/null &
  BPID=$!
  for _ in $(seq 60); do curl -sf 127.0.0.1:17951/health/ready >/dev/null && break; sleep 0.5; done; sleep 1
}
for r in 1 2; do for b in new old; do
  start /tmp/hb-$b
  L=$(timeout 60 /tmp/pglimits -dsn "$DSN" -test insert -c 16 -d 5s 2>&1 | tail -1 | sed 's/.*: \([0-9]*\) txn\/s.*/\1/')
  out=$(/tmp/meshload -dsn "$DSN" -url ws://127.0.0.1:17951/ws -hellos 4000 -concurrency 200 -storm 2>/dev/null)
  echo "$b: L=$L new=$(echo "$out" | grep '"hellosPerSec"' | tr -dc '0-9.') storm=$(echo "$out" | grep stormHellosPerSec | tr -dc '0-9.')"
  sleep 10
done; done
kill -INT $BPID; wait
