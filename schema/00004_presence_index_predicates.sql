-- Presence lookups that stay on their own index however stale the statistics are.
--
-- presences churns fast (every hello inserts, every close ends a row), so the planner's size
-- estimates for its partial indexes lag far behind: after a burst of hellos it believed the
-- "ended_at IS NULL" indexes held about one entry and chose a whole-index scan of
-- presences_cwd_live_idx (no index condition at all) for lookups by id or by identity key —
-- 1.6 ms per hello at 2 000 live presences, growing with every presence. A partial index is
-- only a candidate for a query whose WHERE clause implies the index's predicate, so each
-- predicate now also names the index's leading column: only queries that constrain that
-- column (col = $1 implies col IS NOT NULL) can use the index. Lookups by id go to the
-- primary key. presences_mesh_live_idx is dropped: the identity index leads with mesh_id and
-- serves the per-mesh queries (count, list_peers, multicast), and with two indexes on
-- mesh_id the planner picked the wrong one for the takeover lookup.

-- +goose Up
DROP INDEX presences_mesh_live_idx;
DROP INDEX presences_identity_live_key;
CREATE UNIQUE INDEX presences_identity_live_key ON presences (mesh_id, identity_key) WHERE ended_at IS NULL AND mesh_id IS NOT NULL;
DROP INDEX presences_member_live_idx;
CREATE INDEX presences_member_live_idx ON presences (member_id) WHERE ended_at IS NULL AND member_id IS NOT NULL;
DROP INDEX presences_cwd_live_idx;
CREATE INDEX presences_cwd_live_idx ON presences (cwd, pid) WHERE ended_at IS NULL AND cwd IS NOT NULL;
DROP INDEX presences_session_id_live_idx;
CREATE INDEX presences_session_id_live_idx ON presences (session_id) WHERE ended_at IS NULL AND session_id IS NOT NULL;
DROP INDEX presences_instance_live_idx;
CREATE INDEX presences_instance_live_idx ON presences (instance_id) WHERE ended_at IS NULL AND instance_id IS NOT NULL;

-- +goose Down
DROP INDEX presences_instance_live_idx;
CREATE INDEX presences_instance_live_idx ON presences (instance_id) WHERE ended_at IS NULL;
DROP INDEX presences_session_id_live_idx;
CREATE INDEX presences_session_id_live_idx ON presences (session_id) WHERE ended_at IS NULL;
DROP INDEX presences_cwd_live_idx;
CREATE INDEX presences_cwd_live_idx ON presences (cwd, pid) WHERE ended_at IS NULL;
DROP INDEX presences_member_live_idx;
CREATE INDEX presences_member_live_idx ON presences (member_id) WHERE ended_at IS NULL;
DROP INDEX presences_identity_live_key;
CREATE UNIQUE INDEX presences_identity_live_key ON presences (mesh_id, identity_key) WHERE ended_at IS NULL;
CREATE INDEX presences_mesh_live_idx ON presences (mesh_id, connected_at) WHERE ended_at IS NULL;
