package audit

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func mkMesh(t *testing.T, d *testdb.DB, id string) {
	t.Helper()
	if _, err := d.Pool.Exec(context.Background(), "INSERT INTO meshes (id, name, slug) VALUES ($1, $1, $1)", id); err != nil {
		t.Fatal(err)
	}
}

func appendTx(ctx context.Context, d *testdb.DB, events []Event) error {
	return pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		return Append(ctx, db.New(d.Pool).WithTx(tx), events, time.Now())
	})
}

// Many writers at once (as many instances would be) keep one unforked chain per mesh.
func TestConcurrentAppendsKeepOneChain(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	mkMesh(t, d, "mA")
	mkMesh(t, d, "mB")
	const writers, perWriter = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				// Each batch touches both meshes, in alternating order.
				evs := []Event{
					{MeshID: "mA", Type: "message_sent", ActorID: "x", Payload: map[string]any{"targetSpec": "*", "priority": "now", "w": w, "i": i}},
					{MeshID: "mB", Type: "peer_joined", Payload: map[string]any{"groups": []any{}, "pubkey": "<&>\u2028"}},
				}
				if w%2 == 1 {
					evs[0], evs[1] = evs[1], evs[0]
				}
				if err := appendTx(ctx, d, evs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	q := db.New(d.Pool)
	for _, mesh := range []string{"mA", "mB"} {
		v, err := VerifyMesh(ctx, q, mesh)
		if err != nil {
			t.Fatal(err)
		}
		if !v.Valid || v.Entries != writers*perWriter {
			t.Fatalf("mesh %s: %+v", mesh, v)
		}
	}
	// Tampering with a stored payload is caught at that row.
	var id int64
	if err := d.Pool.QueryRow(ctx, "SELECT id FROM audit_log WHERE mesh_id = 'mA' ORDER BY id OFFSET 5 LIMIT 1").Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool.Exec(ctx, `UPDATE audit_log SET payload = '{"targetSpec":"*","priority":"low"}' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if v, _ := VerifyMesh(ctx, q, "mA"); v.Valid || v.BrokenAt != id {
		t.Fatalf("tampered chain: %+v (tampered row %d)", v, id)
	}
	if v, _ := VerifyMesh(ctx, q, "nobody"); !v.Valid || v.Entries != 0 {
		t.Fatalf("empty chain: %+v", v)
	}
}

// The original's chain, stored in our table and read back through jsonb and timestamptz,
// verifies, and our appends continue it.
func TestOriginalChainVerifiesFromTheDatabase(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	raw, err := os.ReadFile("testdata/original-audit-chain.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Rows []struct {
			MeshID    string          `json:"mesh_id"`
			EventType string          `json:"event_type"`
			Actor     *string         `json:"actor_member_id"`
			Name      *string         `json:"actor_display_name"`
			Payload   json.RawMessage `json:"payload"`
			PrevHash  string          `json:"prev_hash"`
			Hash      string          `json:"hash"`
			CreatedAt time.Time       `json:"created_at"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	meshID := fx.Rows[0].MeshID
	mkMesh(t, d, meshID)
	for _, r := range fx.Rows {
		if _, err := d.Pool.Exec(ctx, `INSERT INTO audit_log (mesh_id, event_type, actor_member_id, actor_display_name, payload, prev_hash, hash, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, r.MeshID, r.EventType, r.Actor, r.Name, string(r.Payload), r.PrevHash, r.Hash, r.CreatedAt); err != nil {
			t.Fatal(err)
		}
	}
	q := db.New(d.Pool)
	if v, err := VerifyMesh(ctx, q, meshID); err != nil || !v.Valid || v.Entries != len(fx.Rows) {
		t.Fatalf("original chain from the database: %+v %v", v, err)
	}
	if err := appendTx(ctx, d, []Event{{MeshID: meshID, Type: "peer_left", ActorID: "abc", Payload: map[string]any{}}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := VerifyMesh(ctx, q, meshID); !v.Valid || v.Entries != len(fx.Rows)+1 {
		t.Fatalf("continued chain: %+v", v)
	}
}

func TestLockKeyIsPositiveAndStable(t *testing.T) {
	k := LockKey("mesh1")
	if k <= 0 || k != LockKey("mesh1") || k == LockKey("mesh2") {
		t.Fatalf("LockKey: %d", k)
	}
}

// Hot-path writers enqueue without the chain lock; chainers (several at once, as several
// instances would run) link everything into one valid chain, each event exactly once.
func TestEnqueuedEventsAreChainedOnce(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	mkMesh(t, d, "mQ")
	const writers, perWriter = 6, 20
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var chainers sync.WaitGroup
	for range 3 {
		chainers.Add(1)
		go func() {
			defer chainers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := ChainPending(ctx, d.Pool, "mQ"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				err := pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
					return Enqueue(ctx, db.New(d.Pool).WithTx(tx), []Event{{MeshID: "mQ", Type: "message_sent", ActorID: "x",
						Payload: map[string]any{"targetSpec": "*", "priority": "now", "w": w, "i": i}}}, time.Now())
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	chainers.Wait()
	// Whatever the last rounds left. (Events wait for every older transaction on the cluster
	// to end — parallel tests run some — so this may take a few rounds.)
	var v Verification
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := ChainPending(ctx, d.Pool, "mQ"); err != nil {
			t.Fatal(err)
		}
		v, err = VerifyMesh(ctx, db.New(d.Pool), "mQ")
		if err != nil || v.Entries >= writers*perWriter || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !v.Valid || v.Entries != writers*perWriter {
		t.Fatalf("chain after concurrent enqueue and chaining: %+v %v", v, err)
	}
	var pending int
	if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM audit_pending").Scan(&pending); err != nil || pending != 0 {
		t.Fatalf("pending rows left: %d %v", pending, err)
	}
}

// TestChainerLinksNotedMeshesAtOnceAndTheRestOnItsSweep: a noted mesh is chained on the
// next tick; a mesh nobody noted (its events came from elsewhere) waits for the sweep, and
// is chained then.
func TestChainerLinksNotedMeshesAtOnceAndTheRestOnItsSweep(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mkMesh(t, d, "noted")
	mkMesh(t, d, "other")
	enqueue := func(mesh string) {
		t.Helper()
		if err := Enqueue(ctx, db.New(d.Pool), []Event{{MeshID: mesh, Type: "peer_left", ActorID: "x"}}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	chained := func(mesh string) int {
		t.Helper()
		var n int
		if err := d.Pool.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE mesh_id = $1", mesh).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	c := NewChainer(d.Pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	const sweep = 3 * time.Second
	go c.Run(ctx, 20*time.Millisecond, sweep)
	time.Sleep(200 * time.Millisecond) // past the first tick's sweep
	start := time.Now()
	enqueue("noted")
	enqueue("other")
	c.Note("noted")
	for chained("noted") == 0 {
		if time.Since(start) > sweep/2 {
			t.Fatal("a noted mesh was not chained within half a sweep")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := chained("other"); n != 0 && time.Since(start) < sweep-500*time.Millisecond {
		t.Fatalf("a mesh nobody noted was chained before the sweep (%d rows)", n)
	}
	for chained("other") == 0 {
		if time.Since(start) > 3*sweep {
			t.Fatal("the sweep never chained the mesh nobody noted")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A chain longer than a page is verified across page boundaries, in constant memory: valid as
// a whole, and a row tampered with in a later page is found, with every row counted.
func TestVerifyMeshPagesThroughALongChain(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	mkMesh(t, d, "mL")
	n := 2*verifyPage + 17
	events := make([]Event, n)
	for i := range events {
		events[i] = Event{MeshID: "mL", Type: "message_sent", Payload: map[string]any{"i": i}}
	}
	if err := appendTx(ctx, d, events); err != nil {
		t.Fatal(err)
	}
	q := db.New(d.Pool)
	if v, err := VerifyMesh(ctx, q, "mL"); err != nil || !v.Valid || v.Entries != n {
		t.Fatalf("long chain: %+v %v, want valid with %d entries", v, err, n)
	}
	var id int64
	if err := d.Pool.QueryRow(ctx, "SELECT id FROM audit_log WHERE mesh_id = 'mL' ORDER BY id OFFSET $1 LIMIT 1", verifyPage+5).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool.Exec(ctx, `UPDATE audit_log SET payload = '{"i":-1}' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if v, err := VerifyMesh(ctx, q, "mL"); err != nil || v.Valid || v.BrokenAt != id || v.Entries != n {
		t.Fatalf("tampered in the second page: %+v %v, want broken at %d with %d entries", v, err, id, n)
	}
}
