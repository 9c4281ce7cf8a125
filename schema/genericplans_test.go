package schema_test

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// The audit chainer asks AuditBacklog for every busy mesh on every tick, as a prepared
// statement: its generic plan (the one Postgres switches to after five runs) must reach the
// mesh's messages through an index, not scan the table (it did: 37 ms at 125 000 rows).
func TestAuditBacklogGenericPlanUsesTheIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := testdb.New(t)
	exec := func(sql string) {
		t.Helper()
		if _, err := d.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO meshes (id, name, slug) SELECT 'mesh' || i, 'm' || i, 'm' || i FROM generate_series(0, 3) i`)
	exec(`INSERT INTO members (id, mesh_id, peer_pubkey, display_name, role) SELECT 'mem' || i, 'mesh' || i, 'k' || i, 'p', 'member' FROM generate_series(0, 3) i`)
	exec(`INSERT INTO messages (id, mesh_id, sender_member_id, sender_member_pubkey, target_spec, target_kind, priority, nonce, ciphertext, expires_at, audit_xid)
	      SELECT 'msg' || lpad(i::text, 6, '0'), 'mesh' || (i % 4), 'mem' || (i % 4), 'k', '*', 'broadcast', 'now', 'n', 'c', now() + interval '1 hour', pg_current_xact_id()
	      FROM generate_series(0, 19999) i`)
	exec(`INSERT INTO audit_cursors (mesh_id, message_xid, message_id) SELECT mesh_id, max(audit_xid), max(id) FROM messages GROUP BY mesh_id`)
	exec(`ANALYZE messages`)
	conn := prepareGeneric(t, d, "backlog(text)", namedQuery(t, "../queries/audit.sql", "AuditBacklog"))
	plan := explain(t, conn, "EXECUTE backlog('mesh1')")
	if strings.Contains(plan, "Seq Scan on messages") || !strings.Contains(plan, "Index Only Scan Backward using messages_audit_idx") {
		t.Fatalf("AuditBacklog's generic plan does not probe messages_audit_idx:\n%s", plan)
	}
	var backlog bool
	if err := conn.QueryRow(ctx, "EXECUTE backlog('mesh1')").Scan(&backlog); err != nil || backlog {
		t.Fatalf("backlog = %v, %v; want false (every message chained)", backlog, err)
	}
	exec(`UPDATE audit_cursors SET message_id = 'msg000000' WHERE mesh_id = 'mesh1'`)
	if err := conn.QueryRow(ctx, "EXECUTE backlog('mesh1')").Scan(&backlog); err != nil || !backlog {
		t.Fatalf("backlog = %v, %v; want true (messages past the cursor)", backlog, err)
	}
}

// prepareGeneric prepares query as the statement named by signature ("name(types…)") on a
// connection of its own, with the generic plan forced: the plan a prepared statement runs
// after five executions.
func prepareGeneric(t *testing.T, d *testdb.DB, signature, query string) *pgxpool.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := d.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	for _, sql := range []string{"SET plan_cache_mode = force_generic_plan", "PREPARE " + signature + " AS " + query} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return conn
}

// explain is EXPLAIN (ANALYZE, COSTS OFF) of sql on conn, one line per plan line.
func explain(t *testing.T, conn *pgxpool.Conn, sql string) string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "EXPLAIN (ANALYZE, COSTS OFF) "+sql)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n") + "\n"
}

// namedQuery is the SQL of one sqlc query of a queries/*.sql file, its comments left out and
// its named parameters numbered in order of appearance ($1, …).
func namedQuery(t *testing.T, file, name string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "-- name: "+name+" ")
	if !ok {
		t.Fatalf("%s: no query %s", file, name)
	}
	rest, _, _ = strings.Cut(rest, "-- name: ")
	var sql []string
	for _, line := range strings.Split(rest, "\n")[1:] {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "--") {
			sql = append(sql, line)
		}
	}
	params := map[string]string{}
	return regexp.MustCompile(`@[a-z_]+`).ReplaceAllStringFunc(strings.TrimSuffix(strings.Join(sql, "\n"), ";"), func(p string) string {
		if _, ok := params[p]; !ok {
			params[p] = "$" + strconv.Itoa(len(params)+1)
		}
		return params[p]
	})
}

// ClaimLog runs for every broadcast wake-up and every poll, as a prepared statement: its
// generic plan must find each presence by its key, not scan every live presence and hash
// them by mesh (it did: 8.9 ms a read during a reconnect storm of 4 000 sessions).
func TestClaimLogGenericPlanProbesByKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := testdb.New(t)
	exec := func(sql string) {
		t.Helper()
		if _, err := d.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO meshes (id, name, slug) SELECT 'mesh' || i, 'm' || i, 'm' || i FROM generate_series(0, 29) i`)
	exec(`INSERT INTO mesh_logs (mesh_id, epoch, head) SELECT id, 'e', 0 FROM meshes`)
	exec(`INSERT INTO members (id, mesh_id, peer_pubkey, display_name, role)
	      SELECT 'mem' || i, 'mesh' || (i % 30), lpad(to_hex(i), 64, '0'), 'p', 'member' FROM generate_series(0, 2999) i`)
	// A storm that came and went, analyzed while nobody was connected; then the next storm
	// (the statistics know of no live presence).
	exec(`INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd, log_epoch, ended_at)
	      SELECT 'old' || i, 'mesh' || (i % 30), 'mem' || (i % 3000), 'ko' || i, 'so' || i, i, '/', 'e', now() FROM generate_series(0, 5999) i`)
	exec(`VACUUM ANALYZE`)
	exec(`INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd, log_epoch)
	      SELECT 'pr' || i, 'mesh' || (i % 30), 'mem' || i, 'k' || i, 's' || i, i, '/', 'e' FROM generate_series(0, 2999) i`)
	conn := prepareGeneric(t, d, "claimlog(text[], bigint[], text[], bigint[], int)", namedQuery(t, "../queries/mesh_log.sql", "ClaimLog"))
	ids := make([]string, 0, 50)
	for i := 0; i < 3000; i += 60 {
		ids = append(ids, "'pr"+strconv.Itoa(i)+"'")
	}
	plan := explain(t, conn, `EXECUTE claimlog(
		ARRAY[`+strings.Join(ids, ",")+`], array_fill(0::bigint, ARRAY[50]),
		array_fill('e'::text, ARRAY[50]), array_fill(1::bigint, ARRAY[50]), 256)`)
	if !strings.Contains(plan, "Index Scan using presences_pkey") || strings.Contains(plan, "Seq Scan on presences") ||
		strings.Contains(plan, "presences_identity_live_key") || strings.Contains(plan, "presences_mesh_live_idx") {
		t.Fatalf("ClaimLog's generic plan does not probe presences by key:\n%s", plan)
	}
}
