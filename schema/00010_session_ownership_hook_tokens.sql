-- Hardening (issue 9): a session belongs to the member that created it, hooks carry a
-- member-scoped credential, and what one member can make the broker store is bounded.

-- +goose Up

-- Whether the presence's session key was proven with sessionSig: such a presence can only
-- be taken over by a hello that proves the key again.
ALTER TABLE presences ADD COLUMN session_proven boolean NOT NULL DEFAULT false;

-- A hello's sessionPubkey must not be another member's key, revoked members included (a
-- direct message to a member key reaches only that member): the hello looks every member of
-- the mesh up by key, which the live-only unique index cannot serve.
CREATE INDEX members_mesh_pubkey_idx ON members (mesh_id, peer_pubkey);

-- A hook signal that arrived with a hook token before its session's presence existed
-- applies only to a presence of that token's member; NULL = an unauthenticated signal.
ALTER TABLE pending_statuses ADD COLUMN member_id text REFERENCES members (id) ON DELETE CASCADE;
-- The client IP (per-IP key) of an unauthenticated signal: one address may keep only so many
-- waiting, so a few addresses cannot take every stranger's slot.
ALTER TABLE pending_statuses ADD COLUMN client_ip text;

-- Hook tokens: one per member, handed out on the member's authenticated socket
-- ({type:"hook_token"}) and sent by Claude Code hooks as Authorization: Bearer. Only the
-- token's SHA-256 is stored. The token itself is HMAC(hook secret, member id, generation),
-- so the member gets the same token again without the broker keeping it; rotating bumps the
-- generation (the old token's hash no longer matches anything).
CREATE TABLE hook_tokens (
    member_id  text PRIMARY KEY REFERENCES members (id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    generation integer NOT NULL DEFAULT 1 CHECK (generation > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz
);

-- Secrets the broker generates once per deployment and every instance shares (today: the
-- key hook tokens are derived with). Created on first use by whichever instance needs it.
CREATE TABLE broker_secrets (
    name       text PRIMARY KEY,
    secret     bytea NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE broker_secrets;
DROP TABLE hook_tokens;
ALTER TABLE pending_statuses DROP COLUMN client_ip;
ALTER TABLE pending_statuses DROP COLUMN member_id;
DROP INDEX members_mesh_pubkey_idx;
ALTER TABLE presences DROP COLUMN session_proven;
