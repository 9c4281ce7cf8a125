-- Schema v1, part 3: messages, per-recipient delivery state, and the per-mesh audit chain.

-- +goose Up

-- One row per accepted send: the envelope, stored before the ack.
CREATE TABLE messages (
    id                    text PRIMARY KEY,
    mesh_id               text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
    sender_member_id      text NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    sender_presence_id    text,
    sender_session_pubkey text,
    -- the sender member's key, copied so a push needs no join to members.
    sender_member_pubkey  text NOT NULL,
    target_spec           text NOT NULL,
    target_kind           text NOT NULL CHECK (target_kind IN ('member', 'session', 'broadcast', 'group')),
    priority              text NOT NULL CHECK (priority IN ('now', 'next', 'low')),
    nonce                 text NOT NULL,
    ciphertext            text NOT NULL,
    client_message_id     text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz NOT NULL
);
-- Idempotent retries: one message per (sender member, clientMessageId).
CREATE UNIQUE INDEX messages_client_id_key ON messages (sender_member_id, client_message_id) WHERE client_message_id IS NOT NULL;
CREATE INDEX messages_expires_idx ON messages (expires_at);

-- Per-recipient delivery state. A direct message to a member key has one row with
-- recipient_presence_id NULL (any live session of the member may claim it); a message to a
-- session key, and each multicast recipient, has one row per presence. A row is claimed with
-- a lease (claimed_by, lease_expires_at) and is done when delivered_at is set.
CREATE TABLE deliveries (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id            text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    mesh_id               text NOT NULL,
    recipient_member_id   text NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    recipient_presence_id text,
    -- copied from the message so the claim can gate on it without a join.
    priority              text NOT NULL CHECK (priority IN ('now', 'next', 'low')),
    claimed_by            text,
    lease_expires_at      timestamptz,
    attempts              integer NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    delivered_at          timestamptz,
    expires_at            timestamptz NOT NULL
)
-- Room on each page for the claim's lease update to be a HOT update (it changes no indexed
-- column), instead of a new tuple plus an entry in every index.
WITH (fillfactor = 70);
-- The delivery claim: undelivered rows of one presence, or of one member for member-keyed
-- rows, in id order. Deliberately no other index with the predicate "delivered_at IS NULL":
-- on this fast-churning table the planner's statistics lag, and a smaller-looking competing
-- partial index (say on expires_at) gets chosen and scanned whole for every recipient. An
-- expired lease needs no index either: the claim checks it on the recipient's rows.
CREATE INDEX deliveries_presence_pending_idx ON deliveries (recipient_presence_id, id) WHERE delivered_at IS NULL AND recipient_presence_id IS NOT NULL;
CREATE INDEX deliveries_member_pending_idx ON deliveries (recipient_member_id, id) WHERE delivered_at IS NULL AND recipient_presence_id IS NULL;
-- message_status, and the cascade from messages (purged by messages_expires_idx).
CREATE INDEX deliveries_message_idx ON deliveries (message_id);

-- Per-mesh hash chain of metadata (PROTOCOL.md §7). Order is id; created_at is stored with
-- millisecond precision because the hash renders it as JavaScript's toISOString() does.
CREATE TABLE audit_log (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mesh_id            text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
    event_type         text NOT NULL,
    actor_member_id    text,
    actor_display_name text,
    payload            jsonb NOT NULL DEFAULT '{}',
    prev_hash          text NOT NULL,
    hash               text NOT NULL,
    created_at         timestamptz NOT NULL
);
CREATE INDEX audit_log_mesh_id_idx ON audit_log (mesh_id, id);

-- Audit events written with the data they describe but not yet linked into the chain. The
-- hot path (a batch of sends) inserts here without the chain's per-mesh lock; the chainer
-- moves rows into audit_log under that lock, many at a time. A row is never lost: it is
-- deleted in the same transaction that appends it to the chain.
CREATE TABLE audit_pending (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mesh_id            text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
    event_type         text NOT NULL,
    actor_member_id    text,
    actor_display_name text,
    payload            jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL
);
CREATE INDEX audit_pending_mesh_idx ON audit_pending (mesh_id, id);

-- +goose Down
DROP TABLE audit_pending;
DROP TABLE audit_log;
DROP TABLE deliveries;
DROP TABLE messages;
