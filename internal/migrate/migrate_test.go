package migrate_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/internal/migrate"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// The tables PROTOCOL.md needs; later migrations may add more, never fewer.
var wantTables = []string{
	"users", "meshes", "members", "permissions", "invites", "device_codes", "cli_sessions",
	"instances", "presences", "peer_states", "pending_statuses", "hello_replays", "rate_buckets",
	"messages", "deliveries", "audit_log", "job_runs",
}

func tables(t *testing.T, url string) map[string]bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'public' AND table_name <> 'goose_db_version'`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, n := range names {
		set[n] = true
	}
	return set
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := testdb.NewEmpty(t)
	m, err := migrate.Open(d.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	if v, err := m.Version(ctx); err != nil || v != 0 {
		t.Fatalf("fresh database: version %d, err %v; want 0", v, err)
	}
	for round := 1; round <= 2; round++ {
		res, err := m.Up(ctx)
		if err != nil {
			t.Fatalf("round %d up: %v", round, err)
		}
		if int64(len(res)) != m.Latest() {
			t.Fatalf("round %d: applied %d migrations, want %d", round, len(res), m.Latest())
		}
		if v, _ := m.Version(ctx); v != m.Latest() {
			t.Fatalf("round %d: version %d after up, want %d", round, v, m.Latest())
		}
		have := tables(t, d.URL)
		for _, name := range wantTables {
			if !have[name] {
				t.Errorf("round %d: table %s missing after up", round, name)
			}
		}
		if _, err := m.DownTo(ctx, 0); err != nil {
			t.Fatalf("round %d down-to 0: %v", round, err)
		}
		if v, _ := m.Version(ctx); v != 0 {
			t.Fatalf("round %d: version %d after down-to 0", round, v)
		}
		if left := tables(t, d.URL); len(left) != 0 {
			t.Fatalf("round %d: tables left after down-to 0: %v", round, left)
		}
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatalf("final up: %v", err)
	}
}

func TestDownToIntermediateVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := testdb.NewEmpty(t)
	m, err := migrate.Open(d.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DownTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.Version(ctx); v != 1 {
		t.Fatalf("version %d after down-to 1", v)
	}
	have := tables(t, d.URL)
	if !have["meshes"] || have["presences"] || have["messages"] {
		t.Fatalf("after down-to 1 want only part-1 tables, have %v", have)
	}
	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != int(m.Latest()) || st[0].State != "applied" || st[1].State != "pending" {
		t.Fatalf("status after down-to 1: %+v", st)
	}
}

// Several machines running `broker migrate up` at once: goose's advisory lock lets one
// apply each migration, and the others find nothing left to do.
func TestConcurrentUpAppliesEachMigrationOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := testdb.NewEmpty(t)
	const n = 4
	var wg sync.WaitGroup
	applied := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := migrate.Open(d.URL, nil)
			if err != nil {
				errs[i] = err
				return
			}
			defer m.Close()
			res, err := m.Up(ctx)
			applied[i], errs[i] = len(res), err
		}()
	}
	wg.Wait()
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("migrator %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	m, _ := migrate.Open(d.URL, nil)
	defer m.Close()
	if int64(total) != m.Latest() {
		t.Fatalf("migrations applied %d times in total, want %d (once each)", total, m.Latest())
	}
	conn, err := pgx.Connect(ctx, d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM goose_db_version WHERE version_id > 0").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != m.Latest() {
		t.Fatalf("goose_db_version has %d rows, want %d", rows, m.Latest())
	}
}

// Rolling back past migration 7 loses no audit event: the message events not chained yet
// move to audit_pending (where brokers before migration 7 chain them, by id), in transaction
// order together with the events already pending; the chained ones do not.
func TestDownPastMessageAuditKeepsUnchainedEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := testdb.NewEmpty(t)
	m, err := migrate.Open(d.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, stmt := range []string{
		`INSERT INTO meshes (id, name, slug) VALUES ('m', 'm', 'm')`,
		`INSERT INTO members (id, mesh_id, peer_pubkey, display_name) VALUES ('a', 'm', 'aa', 'alice')`,
		`INSERT INTO audit_pending (mesh_id, event_type, actor_member_id, actor_display_name, payload, created_at)
		 VALUES ('m', 'peer_joined', 'a', 'alice', '{}', now())`,
		// Three messages, each from its own transaction; the first is already chained.
		`INSERT INTO messages (id, mesh_id, sender_member_id, sender_member_pubkey, sender_name, target_spec, target_kind, priority, nonce, ciphertext, expires_at, audit_xid)
		 VALUES ('m1', 'm', 'a', 'aa', 'alice', '*', 'broadcast', 'now', 'n', 'c', now() + interval '1 hour', pg_current_xact_id())`,
		// The later transaction stores the smaller id: the copy follows transactions.
		`INSERT INTO messages (id, mesh_id, sender_member_id, sender_member_pubkey, sender_name, target_spec, target_kind, priority, nonce, ciphertext, expires_at, audit_xid)
		 VALUES ('z2', 'm', 'a', 'aa', 'alice', '@ops', 'group', 'next', 'n', 'c', now() + interval '1 hour', pg_current_xact_id())`,
		`INSERT INTO messages (id, mesh_id, sender_member_id, sender_member_pubkey, sender_name, target_spec, target_kind, priority, nonce, ciphertext, expires_at, audit_xid)
		 VALUES ('b3', 'm', 'a', 'aa', 'alice', 'bb', 'member', 'low', 'n', 'c', now() + interval '1 hour', pg_current_xact_id())`,
		`INSERT INTO audit_cursors (mesh_id, message_xid, message_id) SELECT 'm', audit_xid, id FROM messages WHERE id = 'm1'`,
		`INSERT INTO audit_pending (mesh_id, event_type, actor_member_id, actor_display_name, payload, created_at)
		 VALUES ('m', 'peer_left', 'a', 'alice', '{}', now() - interval '1 hour')`,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if _, err := m.DownTo(ctx, 6); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT event_type, actor_member_id, actor_display_name, coalesce(payload->>'targetSpec', '-'), coalesce(payload->>'priority', '-')
		FROM audit_pending WHERE mesh_id = 'm' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var typ, actor, name, target, prio string
		if err := rows.Scan(&typ, &actor, &name, &target, &prio); err != nil {
			t.Fatal(err)
		}
		got = append(got, typ+" "+actor+" "+name+" "+target+" "+prio)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// In the order written (pre-7 brokers chain audit_pending by id): the pending events
	// around the messages keep their places, whatever their times say.
	want := []string{"peer_joined a alice - -", "message_sent a alice @ops next", "message_sent a alice bb low", "peer_left a alice - -"}
	if !slices.Equal(got, want) {
		t.Fatalf("audit_pending after down-to 6: %q, want %q", got, want)
	}
}
