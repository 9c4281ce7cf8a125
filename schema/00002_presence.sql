-- Schema v1, part 2: broker instances, presences (one per live session identity), restore
-- state, pending hook statuses, hello replay memory, shared rate-limit buckets and the
-- periodic jobs' clock.

-- +goose Up

-- One row per running broker process. Presences point at the instance holding their socket;
-- a job ends the presences of instances whose heartbeat stopped.
CREATE TABLE instances (
    id           text PRIMARY KEY,
    hostname     text NOT NULL DEFAULT '',
    version      text NOT NULL DEFAULT '',
    git_sha      text NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    draining_at  timestamptz,
    stopped_at   timestamptz
);
CREATE INDEX instances_live_heartbeat_idx ON instances (heartbeat_at) WHERE stopped_at IS NULL;

-- One row per session identity that is connected or inside its reconnect grace window.
-- identity_key = 's:' || session_pubkey, or 'm:' || member_id || ':' || session_id when the
-- client sent no session key; a hello for a live identity takes the row over.
CREATE TABLE presences (
    id                text PRIMARY KEY,
    mesh_id           text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
    member_id         text NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    identity_key      text NOT NULL,
    session_id        text NOT NULL,
    session_pubkey    text,
    display_name      text,
    pid               integer NOT NULL,
    cwd               text NOT NULL,
    hostname          text,
    peer_type         text,
    channel           text,
    model             text,
    capabilities      text[] NOT NULL DEFAULT '{}',
    protocol_version  integer,
    -- which instance holds the socket now, and which socket: bumped on every takeover, so a
    -- stale socket can never write over its successor's state.
    instance_id       text REFERENCES instances (id) ON DELETE SET NULL,
    connection_epoch  bigint NOT NULL DEFAULT 1,
    status            text NOT NULL DEFAULT 'idle' CHECK (status IN ('idle', 'working', 'dnd')),
    status_source     text NOT NULL DEFAULT 'jsonl' CHECK (status_source IN ('hook', 'manual', 'jsonl')),
    status_updated_at timestamptz NOT NULL DEFAULT now(),
    summary           text,
    groups            jsonb NOT NULL DEFAULT '[]',
    visible           boolean NOT NULL DEFAULT true,
    profile           jsonb NOT NULL DEFAULT '{}',
    stats             jsonb NOT NULL DEFAULT '{}',
    connected_at      timestamptz NOT NULL DEFAULT now(),
    -- last proof of life (pong or frame) from the socket.
    last_seen_at      timestamptz NOT NULL DEFAULT now(),
    -- socket lost without a normal close: the grace window runs from here.
    disconnected_at   timestamptz,
    -- the presence is over (normal close, grace expired, SessionEnd, revoked).
    ended_at          timestamptz,
    end_reason        text
);
CREATE UNIQUE INDEX presences_identity_live_key ON presences (mesh_id, identity_key) WHERE ended_at IS NULL;
CREATE INDEX presences_mesh_live_idx ON presences (mesh_id, connected_at) WHERE ended_at IS NULL;
CREATE INDEX presences_member_live_idx ON presences (member_id) WHERE ended_at IS NULL;
-- Hook resolution by (cwd, pid) and by Claude Code session id.
CREATE INDEX presences_cwd_live_idx ON presences (cwd, pid) WHERE ended_at IS NULL;
CREATE INDEX presences_session_id_live_idx ON presences (session_id) WHERE ended_at IS NULL;
CREATE INDEX presences_instance_live_idx ON presences (instance_id) WHERE ended_at IS NULL;
-- Direct messages are addressed by session key. Ended presences are included, because a
-- stale session key routes to its member.
CREATE INDEX presences_session_pubkey_idx ON presences (mesh_id, session_pubkey) WHERE session_pubkey IS NOT NULL;
-- The working -> idle TTL sweep.
CREATE INDEX presences_working_idx ON presences (status_updated_at) WHERE status = 'working' AND ended_at IS NULL;
-- Grace-window expiry.
CREATE INDEX presences_grace_idx ON presences (disconnected_at) WHERE disconnected_at IS NOT NULL AND ended_at IS NULL;

-- What a member's sessions carry over between connections (hello_ack restore fields).
CREATE TABLE peer_states (
    mesh_id           text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
    member_id         text NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    groups            jsonb NOT NULL DEFAULT '[]',
    profile           jsonb NOT NULL DEFAULT '{}',
    visible           boolean NOT NULL DEFAULT true,
    last_summary      text,
    last_display_name text,
    cumulative_stats  jsonb NOT NULL DEFAULT '{"messagesIn":0,"messagesOut":0,"toolCalls":0,"errors":0}',
    last_seen_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mesh_id, member_id)
);

-- Hook signals that arrived before their session's presence existed (kept 10 s).
CREATE TABLE pending_statuses (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pid         integer NOT NULL DEFAULT 0,
    cwd         text NOT NULL,
    session_id  text,
    status      text NOT NULL CHECK (status IN ('idle', 'working', 'dnd')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz
);
CREATE INDEX pending_statuses_cwd_idx ON pending_statuses (cwd, pid, created_at) WHERE applied_at IS NULL;
CREATE INDEX pending_statuses_session_idx ON pending_statuses (session_id, created_at) WHERE applied_at IS NULL AND session_id IS NOT NULL;
CREATE INDEX pending_statuses_created_idx ON pending_statuses (created_at);

-- Hello signatures accepted in the last 2 minutes, so a replayed hello is refused on any instance.
CREATE TABLE hello_replays (
    signature  text PRIMARY KEY,
    mesh_id    text NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX hello_replays_expires_idx ON hello_replays (expires_at);

-- Token buckets shared by every instance (per-member send rate, per (pid, cwd) hook rate), so a
-- member connected to several instances does not get several times its limit.
CREATE TABLE rate_buckets (
    key        text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rate_buckets_updated_idx ON rate_buckets (updated_at);

-- Periodic jobs run once per period across the fleet: each run first claims its period
-- here (a conditional UPDATE), inside a transaction that also holds the job's advisory lock.
CREATE TABLE job_runs (
    name        text PRIMARY KEY,
    last_run_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE job_runs;
DROP TABLE rate_buckets;
DROP TABLE hello_replays;
DROP TABLE pending_statuses;
DROP TABLE peer_states;
DROP TABLE presences;
DROP TABLE instances;
