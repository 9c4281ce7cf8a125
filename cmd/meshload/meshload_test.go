package main

import (
	"context"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// broker starts one instance without the send limit (as the benchmarks run it) and returns
// options aimed at it.
func broker(t *testing.T) options {
	t.Helper()
	d := testdb.New(t)
	inst := brokertest.Start(t, map[string]string{"DATABASE_URL": d.URL, "SEND_RATE_LIMIT_PER_MIN": "0"})
	return options{dsn: d.URL, urls: []string{inst.WS}, pairs: 3, duration: 700 * time.Millisecond, size: 64,
		window: 2, priority: "now", drain: 10 * time.Second, meshSize: 50}
}

func within(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// checkAccounting holds a run's report to its own arithmetic: every acked send delivered
// `fanout` times, nothing lost or duplicated, percentiles in order.
func checkAccounting(t *testing.T, res Result, fanout int64) {
	t.Helper()
	if res.Sent == 0 || res.Acked != res.Sent || res.Refused != 0 {
		t.Fatalf("sent %d, acked %d, refused %d: want every send acked", res.Sent, res.Acked, res.Refused)
	}
	if res.Delivered != res.Acked*fanout || res.Lost != 0 || res.Duplicated != 0 {
		t.Fatalf("acked %d, delivered %d (want %d), lost %d, duplicated %d", res.Acked, res.Delivered, res.Acked*fanout, res.Lost, res.Duplicated)
	}
	if !(res.P50Ms > 0 && res.P50Ms <= res.P95Ms && res.P95Ms <= res.P99Ms && res.P99Ms <= res.MaxMs) {
		t.Fatalf("percentiles out of order: p50 %v p95 %v p99 %v max %v", res.P50Ms, res.P95Ms, res.P99Ms, res.MaxMs)
	}
}

func TestPairsRunAccountsForEverySend(t *testing.T) {
	t.Parallel()
	o := broker(t)
	res, err := run(within(t, 60*time.Second), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "direct" || res.Senders != 3 || res.Receivers != 3 || res.MsgsPerSec <= 0 {
		t.Fatalf("report: %+v", res)
	}
	checkAccounting(t, res, 1)
}

func TestBroadcastRunCountsEveryRecipient(t *testing.T) {
	t.Parallel()
	o := broker(t)
	o.broadcast = 4
	res, err := run(within(t, 60*time.Second), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "broadcast" || res.Senders != 1 || res.Receivers != 4 {
		t.Fatalf("report: %+v", res)
	}
	checkAccounting(t, res, 4)
}

// -rate paces the sends: far fewer than an unpaced run would make (it sends as fast as acks
// come back, hundreds a second even here).
func TestRateLimitsWhatIsOffered(t *testing.T) {
	t.Parallel()
	o := broker(t)
	o.rate, o.duration = 20, time.Second
	res, err := run(within(t, 60*time.Second), o)
	if err != nil {
		t.Fatal(err)
	}
	checkAccounting(t, res, 1)
	if limit := int64(20*2 + o.pairs*o.window); res.Sent > limit {
		t.Fatalf("sent %d at -rate 20 for 1 s; want at most %d", res.Sent, limit)
	}
}

func TestBurstReportsWhenTheLastPushArrived(t *testing.T) {
	t.Parallel()
	o := broker(t)
	o.burst = 3
	res, err := run(within(t, 60*time.Second), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "burst" || res.Sent != 3 || res.BurstAllInMs <= 0 || res.BurstAllInMs < res.MaxMs-1 {
		t.Fatalf("burst report: %+v", res)
	}
	checkAccounting(t, res, 1)
}

func TestHellosAndStormConnectEverySocket(t *testing.T) {
	t.Parallel()
	o := broker(t)
	o.storm, o.meshSize = true, 4
	res, err := runConnect(within(t, 60*time.Second), o, 10, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 0 || res.StormFailed != 0 || res.HellosPerSec <= 0 || res.StormHellosPerSec <= 0 {
		t.Fatalf("hellos report: %+v", res)
	}
}

func TestIdleReportsTheBrokersMemory(t *testing.T) {
	t.Parallel()
	o := broker(t)
	res, err := runConnect(within(t, 60*time.Second), o, 5, 5, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "idle" || res.Failed != 0 || res.RSSBeforeMiB <= 0 || res.RSSConnectedMiB <= 0 || res.RSSAfterMiB <= 0 {
		t.Fatalf("idle report: %+v", res)
	}
}

func TestStoreBatchStoresWhatItReports(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	o := options{dsn: d.URL, duration: 300 * time.Millisecond}
	res, err := runStore(within(t, 60*time.Second), o, 5, 2, true, true)
	if err != nil {
		t.Fatal(err)
	}
	var messages, deliveries int64
	if err := d.Pool.QueryRow(context.Background(), "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM deliveries)").Scan(&messages, &deliveries); err != nil {
		t.Fatal(err)
	}
	if res.Messages == 0 || res.Messages%5 != 0 || messages != res.Messages || deliveries != res.Messages {
		t.Fatalf("reported %d messages; the database holds %d messages and %d deliveries", res.Messages, messages, deliveries)
	}
}

// With -failover, peers on an instance that goes away reconnect to the other and every acked
// send still arrives (duplicates allowed, losses not) — direct pairs, and broadcasts, whose
// receivers' cursors continue from where they were stored (counted per receiver).
func TestFailoverRunLosesNothingWhenAnInstanceGoes(t *testing.T) {
	for _, c := range []struct {
		name             string
		pairs, broadcast int
		perSend          int64 // deliveries each acked send owes
	}{{"direct", 4, 0, 1}, {"broadcast", 0, 6, 6}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := testdb.New(t)
			env := map[string]string{"DATABASE_URL": d.URL, "SEND_RATE_LIMIT_PER_MIN": "0", "DRAIN_TIMEOUT": "2s"}
			a := brokertest.Start(t, env)
			b := brokertest.Start(t, env)
			o := options{dsn: d.URL, urls: []string{a.WS, b.WS}, pairs: c.pairs, broadcast: c.broadcast, duration: 3 * time.Second, size: 64,
				window: 2, priority: "now", drain: 20 * time.Second, meshSize: 50, failover: true}
			go func() {
				time.Sleep(1500 * time.Millisecond) // mid-run
				_ = b.Stop()
			}()
			res, err := run(within(t, 90*time.Second), o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Acked == 0 || res.Lost != 0 || res.Reconnects == 0 || res.Delivered < res.Acked*c.perSend {
				t.Fatalf("acked %d, delivered %d, lost %d, reconnects %d: %+v", res.Acked, res.Delivered, res.Lost, res.Reconnects, res)
			}
			t.Logf("acked %d delivered %d duplicated %d reconnects %d resends %d", res.Acked, res.Delivered, res.Duplicated, res.Reconnects, res.Resends)
		})
	}
}
