package schema_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"

	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// TestPresenceLookupsStayOnTheirIndexWithStaleStatistics reproduces what a hello storm does
// to the planner: statistics gathered while presences was nearly empty, then thousands of
// live presences. Each hot per-row lookup must still reach its row through an index
// condition, not by filtering a whole partial index (which made every hello O(live
// presences): 1.6 ms at 2 000).
func TestPresenceLookupsStayOnTheirIndexWithStaleStatistics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := testdb.New(t)
	exec := func(sql string) {
		t.Helper()
		if _, err := d.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO meshes (id, name, slug) SELECT 'mesh' || i, 'm' || i, 'm' || i FROM generate_series(0, 39) i`)
	exec(`INSERT INTO members (id, mesh_id, peer_pubkey, display_name, role)
	      SELECT 'mem' || i, 'mesh' || (i % 40), lpad(to_hex(i), 64, '0'), 'p' || i, 'member' FROM generate_series(0, 1999) i`)
	insert := func(from, to int) {
		t.Helper()
		exec(`INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd)
		      SELECT 'pr' || i, 'mesh' || (i % 40), 'mem' || (i % 2000), 'k' || i, 'sess' || i, i, '/w/' || (i % 7)
		      FROM generate_series(` + strconv.Itoa(from) + `, ` + strconv.Itoa(to) + `) i`)
	}
	// A storm that came and went, vacuumed while nobody was connected: the partial indexes
	// have pages but, as far as the statistics know, no entries. Then the next storm.
	insert(0, 5999)
	exec(`UPDATE presences SET ended_at = now()`)
	exec(`VACUUM ANALYZE presences`)
	insert(6000, 8999)

	lookups := map[string]string{
		"takeover by identity": `UPDATE presences SET last_seen_at = now() WHERE mesh_id = 'mesh7' AND identity_key = 'k7207' AND ended_at IS NULL`,
		"takeover miss":        `UPDATE presences SET last_seen_at = now() WHERE mesh_id = 'mesh7' AND identity_key = 'nobody' AND ended_at IS NULL`,
		"end by id and epoch":  `UPDATE presences SET ended_at = now() WHERE id = 'pr7500' AND connection_epoch = 1 AND ended_at IS NULL`,
		"touch by id":          `UPDATE presences SET last_seen_at = now() WHERE id = 'pr7501' AND ended_at IS NULL`,
		"hook by session id":   `SELECT id FROM presences WHERE session_id = 'sess7502' AND ended_at IS NULL`,
		"member's presences":   `SELECT id FROM presences WHERE member_id = 'mem1503' AND ended_at IS NULL`,
	}
	removed := regexp.MustCompile(`Rows Removed by Filter: (\d+)`)
	for name, sql := range lookups {
		rows, err := d.Pool.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF) "+sql)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		plan := ""
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan += line + "\n"
		}
		rows.Close()
		for _, m := range removed.FindAllStringSubmatch(plan, -1) {
			if n, _ := strconv.Atoi(m[1]); n > 100 {
				t.Errorf("%s filters %d rows to find one:\n%s", name, n, plan)
			}
		}
		if !regexp.MustCompile(`Index Cond`).MatchString(plan) {
			t.Errorf("%s has no index condition:\n%s", name, plan)
		}
	}
}
