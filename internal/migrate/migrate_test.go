package migrate_test

import (
	"context"
	"slices"
	"strconv"
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

// migratedUp is an empty database migrated to the newest version, and its migrator.
func migratedUp(t *testing.T) (*testdb.DB, *migrate.Migrator) {
	t.Helper()
	d := testdb.NewEmpty(t)
	m, err := migrate.Open(d.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if _, err := m.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d, m
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
	d, m := migratedUp(t)
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
	d, m := migratedUp(t)
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

// Migration 14 moves queued multicast copies into the mesh log — each message with an
// undelivered copy gets a position, each live presence's cursor goes just below the first
// entry it had a copy of, the copies go — and back: down recreates exactly the undelivered
// copies, and the direct messages' deliveries are untouched both ways.
func TestMeshLogMigrationMovesQueuedMulticastBothWays(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, m := migratedUp(t)
	if _, err := m.DownTo(ctx, 13); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(stmts ...string) {
		t.Helper()
		for _, s := range stmts {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	msg := func(id, target, kind string, ago int) string {
		return `INSERT INTO messages (id, mesh_id, sender_member_id, sender_member_pubkey, target_spec, target_kind, priority, nonce, ciphertext, created_at, expires_at)
		 VALUES ('` + id + `', 'm', 'a', 'aa', '` + target + `', '` + kind + `', 'now', 'n', 'c', now() - interval '` + strconv.Itoa(ago) + ` seconds', now() + interval '1 hour')`
	}
	exec(`INSERT INTO meshes (id, name, slug) VALUES ('m', 'm', 'm')`,
		`INSERT INTO members (id, mesh_id, peer_pubkey, display_name) VALUES ('a', 'm', 'aa', 'alice'), ('b', 'm', 'bb', 'bob'), ('c', 'm', 'cc', 'carol')`,
		`INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd, groups) VALUES
		 ('bp', 'm', 'b', 'kb', 'sb', 1, '/', '[]'), ('cp', 'm', 'c', 'kc', 'sc', 2, '/', '[{"name":"ops/db"}]')`,
		msg("x1", "*", "broadcast", 3), msg("x2", "@ops", "group", 2), msg("x3", "*", "broadcast", 1), msg("d1", "bb", "member", 1),
		`INSERT INTO deliveries (message_id, mesh_id, recipient_member_id, recipient_presence_id, priority, expires_at, delivered_at) VALUES
		 ('x1', 'm', 'b', 'bp', 'now', now() + interval '1 hour', now())`,
		`INSERT INTO deliveries (message_id, mesh_id, recipient_member_id, recipient_presence_id, priority, expires_at) VALUES
		 ('x1', 'm', 'c', 'cp', 'now', now() + interval '1 hour'), ('x2', 'm', 'c', 'cp', 'now', now() + interval '1 hour'),
		 ('x3', 'm', 'b', 'bp', 'now', now() + interval '1 hour'), ('x3', 'm', 'c', 'cp', 'now', now() + interval '1 hour'),
		 ('d1', 'm', 'b', NULL, 'now', now() + interval '1 hour')`)
	copies := func() []string {
		t.Helper()
		rows, err := conn.Query(ctx, `SELECT message_id || '>' || coalesce(recipient_presence_id, recipient_member_id) FROM deliveries
			WHERE delivered_at IS NULL ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	before := copies()

	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if got := copies(); !slices.Equal(got, []string{"d1>b"}) {
		t.Fatalf("undelivered copies after up: %q; want the direct message's alone", got)
	}
	var seqs string
	if err := conn.QueryRow(ctx, `SELECT string_agg(id || '=' || coalesce(mesh_seq::text, '-'), ' ' ORDER BY id) FROM messages`).Scan(&seqs); err != nil {
		t.Fatal(err)
	}
	if seqs != "d1=- x1=1 x2=2 x3=3" {
		t.Fatalf("positions after up: %s", seqs)
	}
	var cursors string
	if err := conn.QueryRow(ctx, `SELECT string_agg(p.id || '=' || p.log_acked || (p.log_epoch = l.epoch)::text, ' ' ORDER BY p.id)
		FROM presences p JOIN mesh_logs l ON l.mesh_id = p.mesh_id WHERE l.head = 3`).Scan(&cursors); err != nil {
		t.Fatal(err)
	}
	if cursors != "bp=2true cp=0true" {
		t.Fatalf("cursors after up: %s; want bob's below x3 and carol's below x1, in the log's epoch", cursors)
	}

	if _, err := m.DownTo(ctx, 13); err != nil {
		t.Fatal(err)
	}
	if got := copies(); !slices.Equal(got, before) {
		t.Fatalf("undelivered copies after down: %q; want those before up, %q", got, before)
	}
}
