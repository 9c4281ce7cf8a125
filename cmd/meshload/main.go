// Command meshload drives one or more brokers with P sender→receiver pairs (or one
// broadcaster fanning out to N receivers) for W seconds, with S-byte crypto_box-sized
// payloads, and reports sent, acked, delivered, lost, duplicated, messages/s and the
// send→push latency distribution. It provisions its own mesh through the database.
//
//	go run ./cmd/meshload -dsn "$DATABASE_URL" -url ws://127.0.0.1:7900/ws -pairs 100 -duration 10s -size 256
//
// The brokers must run with SEND_RATE_LIMIT_PER_MIN=0 (the per-member limit would
// otherwise cap each sender at 60 messages a minute).
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/client"
)

type options struct {
	failover  bool
	dsn       string
	urls      []string
	pairs     int
	broadcast int
	duration  time.Duration
	size      int
	rate      float64
	window    int
	priority  string
	drain     time.Duration
	burst     int
	storm     bool
	meshSize  int
}

func main() { os.Exit(runMain()) }

// runMain parses the flags, runs the chosen mode and returns the exit code (so deferred work,
// such as finishing a CPU profile, runs before the process exits).
func runMain() int {
	var o options
	var urls string
	flag.StringVar(&o.dsn, "dsn", os.Getenv("DATABASE_URL"), "Postgres URL of the brokers' database (provisions the test mesh)")
	flag.StringVar(&urls, "url", "ws://127.0.0.1:7900/ws", "broker WebSocket URL(s), comma-separated; peers alternate between them")
	flag.IntVar(&o.pairs, "pairs", 10, "sender→receiver pairs (direct messages)")
	flag.IntVar(&o.broadcast, "broadcast", 0, "instead of pairs: one sender broadcasting to this many receivers")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long to send")
	flag.IntVar(&o.size, "size", 256, "ciphertext bytes per message (before base64)")
	flag.Float64Var(&o.rate, "rate", 0, "total messages/s to offer (0 = as fast as acks allow)")
	flag.IntVar(&o.window, "window", 8, "sends in flight per sender at most")
	flag.StringVar(&o.priority, "priority", "now", "message priority")
	flag.DurationVar(&o.drain, "drain", 10*time.Second, "how long to wait for outstanding pushes after sending stops")
	flag.BoolVar(&o.failover, "failover", false, "direct or -broadcast mode: peers reconnect (to the next -url) when their socket is lost, receivers acknowledge with client_ack, and a send whose socket was lost is repeated with its clientMessageId; run it while killing an instance to count acked messages lost")
	flag.IntVar(&o.burst, "burst", 0, "instead of a timed run: send this many DMs at the same instant (one per pair) and report how long until all are pushed")
	hellos := flag.Int("hellos", 0, "instead of messages: open this many authenticated sockets and report hellos/s")
	idle := flag.Int("idle", 0, "instead of messages: hold this many idle authenticated sockets and report the broker's RSS per socket")
	concurrency := flag.Int("concurrency", 200, "handshakes in flight for -hellos and -idle; connections for -storebatch")
	flag.IntVar(&o.meshSize, "mesh-size", 50, "with -hellos and -idle: peers per mesh (each hello is announced to the mesh's other peers)")
	hold := flag.Duration("hold", 10*time.Second, "how long -idle holds the sockets (and waits after closing them)")
	flag.BoolVar(&o.storm, "storm", false, "with -hellos: then drop every socket and reconnect them all at once (a deploy's reconnect storm)")
	storeBatch := flag.Int("storebatch", 0, "instead of a broker run: store batches of this many messages straight into the database with the broker's statement, from -concurrency connections, for -duration")
	noDeliveries := flag.Bool("no-deliveries", false, "with -storebatch: store no delivery rows")
	noAudit := flag.Bool("no-audit", false, "with -storebatch: store messages without the audit transaction id (never chained; measures its index)")
	cpuProfile := flag.String("cpuprofile", "", "write the load generator's own CPU profile to this file (it shares the machine's cores with the broker)")
	flag.Parse()
	if *cpuProfile != "" {
		stopProfile, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "meshload:", err)
			return 2
		}
		defer stopProfile()
	}
	o.urls = strings.Split(urls, ",")
	if o.dsn == "" {
		fmt.Fprintln(os.Stderr, "meshload: -dsn (or DATABASE_URL) is required to provision the test mesh")
		return 2
	}
	if o.pairs < 1 || o.size < 1 || o.window < 1 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "meshload: -pairs, -size, -window and -duration must be positive")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *storeBatch > 0 {
		res, err := runStore(ctx, o, *storeBatch, *concurrency, !*noDeliveries, !*noAudit)
		if err != nil {
			fmt.Fprintln(os.Stderr, "meshload:", err)
			return 1
		}
		out, _ := json.MarshalIndent(res, "", "  ")
		fmt.Println(string(out))
		return 0
	}
	if *hellos > 0 || *idle > 0 {
		n, h := *hellos, time.Duration(0)
		if *idle > 0 {
			n, h = *idle, *hold
		}
		res, err := runConnect(ctx, o, n, *concurrency, h)
		if err != nil {
			fmt.Fprintln(os.Stderr, "meshload:", err)
			return 1
		}
		out, _ := json.MarshalIndent(res, "", "  ")
		fmt.Println(string(out))
		return 0
	}
	res, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshload:", err)
		return 1
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(out))
	if res.Lost > 0 || res.Duplicated > 0 {
		return 1
	}
	return 0
}

// Result is the run's summary (printed as JSON).
type Result struct {
	Mode         string  `json:"mode"`
	Brokers      int     `json:"brokers"`
	Senders      int     `json:"senders"`
	Receivers    int     `json:"receivers"`
	SizeBytes    int     `json:"sizeBytes"`
	DurationSec  float64 `json:"durationSec"`
	Sent         int64   `json:"sent"`
	Acked        int64   `json:"acked"`
	Refused      int64   `json:"refused"`
	Delivered    int64   `json:"delivered"`
	Lost         int64   `json:"lost"`
	Duplicated   int64   `json:"duplicated"`
	MsgsPerSec   float64 `json:"deliveredPerSec"`
	AckedPerSec  float64 `json:"ackedPerSec"`
	P50Ms        float64 `json:"p50Ms"`
	P95Ms        float64 `json:"p95Ms"`
	P99Ms        float64 `json:"p99Ms"`
	MaxMs        float64 `json:"maxMs"`
	BurstAllInMs float64 `json:"burstAllPushedMs,omitempty"`
	Reconnects   int64   `json:"reconnects,omitempty"`
	Resends      int64   `json:"resends,omitempty"`
}

type tracker struct {
	mu        sync.Mutex
	sentAt    map[string]time.Time // clientMessageId → send time
	expect    map[string]int       // clientMessageId → receivers expected
	seen      map[string]int       // clientMessageId/receiver → pushes received
	got       map[string]int       // clientMessageId → receivers that received it
	acked     map[string]bool
	latencies []float64
	dups      int64
	delivered atomic.Int64
	lastPush  atomic.Int64
}

// push records a push to receiver r: its first copy of a message counts as delivered, any
// other copy as a duplicate (so one receiver's duplicate never hides another's loss).
func (tr *tracker) push(r int, f client.Frame) {
	id := f.Str("clientMessageId")
	now := time.Now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	t0, ok := tr.sentAt[id]
	if !ok {
		return
	}
	key := id + "/" + strconv.Itoa(r)
	tr.seen[key]++
	if tr.seen[key] > 1 || tr.got[id] >= tr.expect[id] {
		tr.dups++
		return
	}
	tr.got[id]++
	tr.latencies = append(tr.latencies, float64(now.Sub(t0).Microseconds())/1000)
	tr.delivered.Add(1)
	tr.lastPush.Store(now.UnixNano())
}

func run(ctx context.Context, o options) (Result, error) {
	pool, err := pgxpool.New(ctx, o.dsn)
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()
	q := db.New(pool)
	mesh, err := admin.CreateMesh(ctx, q, fmt.Sprintf("meshload %s", time.Now().Format(time.RFC3339)))
	if err != nil {
		return Result{}, fmt.Errorf("provision mesh: %w", err)
	}
	nSend, nRecv := o.pairs, o.pairs
	mode := "direct"
	if o.broadcast > 0 {
		nSend, nRecv, mode = 1, o.broadcast, "broadcast"
	}
	if o.burst > 0 {
		mode = "burst"
	}
	if o.failover && mode == "burst" {
		return Result{}, fmt.Errorf("-failover is for direct pairs or -broadcast (not with -burst)")
	}
	newPeer := func(name string) (client.Identity, error) {
		pub, sec := client.NewKey()
		m, err := admin.AddMember(ctx, q, mesh.MeshID, pub, name, "member")
		return client.Identity{MeshID: mesh.MeshID, MemberID: m.MemberID, Pubkey: pub, Secret: sec}, err
	}
	fmt.Fprintf(os.Stderr, "meshload: provisioned mesh %s; connecting %d senders and %d receivers to %d broker(s)\n", mesh.MeshID, nSend, nRecv, len(o.urls))
	tr := &tracker{sentAt: map[string]time.Time{}, expect: map[string]int{}, seen: map[string]int{}, got: map[string]int{}, acked: map[string]bool{}}
	senders := make([]*peer, nSend)
	receivers := make([]*peer, nRecv)
	recvKeys := make([]string, nRecv)
	dial := func(i int, name string, urlIndex int, receiver bool) (*peer, error) {
		id, err := newPeer(name)
		if err != nil {
			return nil, err
		}
		_, sess := client.NewKey()
		p := &peer{id: id, sess: sess, sessionID: fmt.Sprintf("%s-%d", name, i), pid: i, urls: o.urls,
			next: urlIndex + 1, ack: receiver && o.failover}
		return p, p.dial(ctx, o.urls[urlIndex%len(o.urls)])
	}
	var wg sync.WaitGroup
	var dialErr atomic.Value
	for i := range nRecv {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := dial(i, fmt.Sprintf("recv-%d", i), i+1, true)
			if err != nil {
				dialErr.Store(err)
				return
			}
			receivers[i], recvKeys[i] = p, p.current().SessionPub
		}()
	}
	for i := range nSend {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := dial(i, fmt.Sprintf("send-%d", i), i, false)
			if err != nil {
				dialErr.Store(err)
				return
			}
			senders[i] = p
		}()
	}
	wg.Wait()
	if e := dialErr.Load(); e != nil {
		return Result{}, fmt.Errorf("connect: %w", e.(error))
	}
	var lastSystem atomic.Int64 // unix nanos of the last system push any peer received
	lastSystem.Store(time.Now().UnixNano())
	// The readers (and, with -failover, their reconnects) stop before the sockets close.
	rctx, stopReaders := context.WithCancel(ctx)
	for i, p := range append(slices.Clone(receivers), senders...) {
		go p.read(rctx, o.failover, func(f client.Frame) { tr.push(i, f) }, func() { lastSystem.Store(time.Now().UnixNano()) })
	}
	// Every peer's hello announced it to every other (peer_joined): 2P connects make ~2P²
	// system pushes, which the broker and the peers are still busy with when the last hello is
	// acked. Measuring starts once they have gone quiet, so the figures are the messages'.
	settle := time.Now()
	for time.Since(time.Unix(0, lastSystem.Load())) < 300*time.Millisecond && time.Since(settle) < 30*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "meshload: peers announced; waited %.1fs for the announcements to settle\n", time.Since(settle).Seconds())
	defer func() {
		stopReaders()
		for _, p := range append(receivers, senders...) {
			_ = p.current().Close()
		}
	}()

	payload := make([]byte, o.size)
	_, _ = rand.Read(payload)
	ct := base64.StdEncoding.EncodeToString(payload)
	nonceBytes := make([]byte, 24)
	_, _ = rand.Read(nonceBytes)
	nonce := base64.StdEncoding.EncodeToString(nonceBytes)

	var sent, acked, refused atomic.Int64
	var seq atomic.Int64
	sendOne := func(sctx context.Context, p *peer, target string, expect int) {
		id := fmt.Sprintf("m%d", seq.Add(1))
		tr.mu.Lock()
		tr.sentAt[id] = time.Now()
		tr.expect[id] = expect
		tr.mu.Unlock()
		sent.Add(1)
		ack, err := p.send(sctx, o.failover, client.Message{Target: target, Priority: o.priority, Nonce: nonce, Ciphertext: ct, ClientMessageID: id})
		if err != nil {
			return
		}
		if ack["queued"] == true {
			acked.Add(1)
			tr.mu.Lock()
			tr.acked[id] = true
			tr.mu.Unlock()
		} else {
			refused.Add(1)
			tr.mu.Lock()
			delete(tr.sentAt, id)
			tr.mu.Unlock()
		}
	}
	target := func(i int) (string, int) {
		if mode == "broadcast" {
			return "*", nRecv
		}
		return recvKeys[i], 1
	}

	start := time.Now()
	var burstMs float64
	if mode == "burst" {
		var bw sync.WaitGroup
		gate := make(chan struct{})
		for i := range min(o.burst, nSend) {
			bw.Add(1)
			go func() {
				defer bw.Done()
				<-gate
				tgt, n := target(i)
				sendOne(ctx, senders[i], tgt, n)
			}()
		}
		start = time.Now()
		close(gate)
		bw.Wait()
	} else {
		sctx, cancel := context.WithTimeout(ctx, o.duration)
		var sw sync.WaitGroup
		perSenderInterval := time.Duration(0)
		if o.rate > 0 {
			perSenderInterval = time.Duration(float64(time.Second) * float64(nSend) / o.rate)
		}
		// Each sender runs -window workers; with -rate each worker sends every
		// window×interval, phased so that the sender's sends are evenly spaced and the
		// senders are staggered over one interval: a steady stream, not periodic bursts,
		// which a slow ack cannot throttle below the offered rate unless window sends are
		// all in flight.
		interval := perSenderInterval * time.Duration(o.window)
		for i := range nSend {
			for w := range o.window {
				sw.Add(1)
				go func() {
					defer sw.Done()
					next := time.Now().Add(perSenderInterval*time.Duration(w) + perSenderInterval*time.Duration(i)/time.Duration(nSend))
					for sctx.Err() == nil {
						if perSenderInterval > 0 {
							if d := time.Until(next); d > 0 {
								select {
								case <-sctx.Done():
									return
								case <-time.After(d):
								}
							}
							next = next.Add(interval)
						}
						tgt, n := target(i)
						sendOne(ctx, senders[i], tgt, n) // an in-flight send completes after -duration
					}
				}()
			}
		}
		ticker := time.NewTicker(time.Second)
	progress:
		for {
			select {
			case <-sctx.Done():
				break progress
			case <-ticker.C:
				el := time.Since(start).Seconds()
				fmt.Fprintf(os.Stderr, "meshload: %5.1fs sent %d acked %d delivered %d (%.0f/s)\n", el, sent.Load(), acked.Load(), tr.delivered.Load(), float64(tr.delivered.Load())/el)
			}
		}
		ticker.Stop()
		cancel()
		sw.Wait()
	}
	sendEnd := time.Now()
	// Wait for outstanding pushes.
	// missing counts pushes still owed for acked messages.
	missing := func() int64 {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		var n int64
		for id := range tr.acked {
			if d := tr.expect[id] - tr.got[id]; d > 0 {
				n += int64(d)
			}
		}
		return n
	}
	deadline := time.Now().Add(o.drain)
	for time.Now().Before(deadline) && missing() > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	if mode == "burst" {
		burstMs = float64(time.Duration(tr.lastPush.Load()-start.UnixNano()).Microseconds()) / 1000
	}
	tr.mu.Lock()
	lat := slices.Clone(tr.latencies)
	dups := tr.dups
	tr.mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	dur := sendEnd.Sub(start).Seconds()
	res := Result{
		Mode: mode, Brokers: len(o.urls), Senders: nSend, Receivers: nRecv, SizeBytes: o.size, DurationSec: dur,
		Sent: sent.Load(), Acked: acked.Load(), Refused: refused.Load(), Delivered: tr.delivered.Load(),
		Lost: missing(), Duplicated: dups,
		MsgsPerSec: float64(tr.delivered.Load()) / dur, AckedPerSec: float64(acked.Load()) / dur,
		P50Ms: pct(.5), P95Ms: pct(.95), P99Ms: pct(.99), BurstAllInMs: burstMs,
		Reconnects: failovers.Load(), Resends: resends.Load(),
	}
	if o.failover {
		failoverNote()
	}
	if len(lat) > 0 {
		res.MaxMs = lat[len(lat)-1]
	}
	return res, nil
}

// startCPUProfile writes the process's CPU profile to path until the returned stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "meshload: cpu profile:", err)
		}
	}, nil
}
