-- Schema v1, part 1: accounts, meshes, members, invites and CLI bearer tokens.
--
-- Conventions for every migration in this folder:
--   * ids are opaque text (32 base62 chars minted by the broker) except append-only internal
--     sequences (deliveries, audit_log, pending_statuses), which are bigint identities.
--   * every timestamp is timestamptz; the broker renders them as ISO-8601 UTC with ms.
--   * small closed sets are text + CHECK rather than enum types: adding a value is a plain
--     constraint swap inside a transaction, and sqlc maps them to Go strings.
--   * "live" rows are found through partial indexes (WHERE ended_at IS NULL, WHERE
--     delivered_at IS NULL), so the hot sets stay small however much history accumulates.

-- +goose Up

-- Accounts of the web side (device-code login, mesh ownership).
CREATE TABLE users (
    id          text PRIMARY KEY,
    name        text,
    email       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email)) WHERE email IS NOT NULL;

CREATE TABLE meshes (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    slug             text NOT NULL,
    -- NULL for meshes provisioned by `broker admin`, which have no web account behind them.
    owner_user_id    text REFERENCES users (id) ON DELETE SET NULL,
    visibility       text NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public')),
    transport        text NOT NULL DEFAULT 'managed' CHECK (transport IN ('managed', 'tailscale', 'self_hosted')),
    tier             text NOT NULL DEFAULT 'free' CHECK (tier IN ('free', 'pro', 'team', 'enterprise')),
    max_peers        integer,
    -- ed25519 keypair that signs invites (hex).
    owner_pubkey     text,
    owner_secret_key text,
    -- 32-byte mesh key handed out in v1 invites (base64url).
    root_key         text,
    self_editable    jsonb NOT NULL DEFAULT '{"displayName":true,"roleTag":true,"groups":true,"messageMode":true}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    archived_at      timestamptz
);
-- Slugs are unique among live meshes (the original allowed duplicates and then picked the
-- first match in /cli/mesh/:slug routes; an archived mesh frees its slug).
CREATE UNIQUE INDEX meshes_slug_live_key ON meshes (slug) WHERE archived_at IS NULL;
CREATE INDEX meshes_owner_user_idx ON meshes (owner_user_id) WHERE owner_user_id IS NOT NULL;

CREATE TABLE members (
    id                text PRIMARY KEY,
    mesh_id           text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
    user_id           text REFERENCES users (id) ON DELETE SET NULL,
    -- ed25519 identity, 64 lowercase hex.
    peer_pubkey       text NOT NULL,
    display_name      text NOT NULL,
    role              text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    role_tag          text,
    default_groups    jsonb NOT NULL DEFAULT '[]',
    message_mode      text NOT NULL DEFAULT 'push' CHECK (message_mode IN ('push', 'inbox', 'off')),
    dashboard_user_id text,
    -- {"<sender pubkey>": ["dm","broadcast",...]} on the recipient's row; absent = defaults.
    peer_grants       jsonb NOT NULL DEFAULT '{}',
    joined_at         timestamptz NOT NULL DEFAULT now(),
    last_seen_at      timestamptz,
    revoked_at        timestamptz
);
-- The hello lookup: at most one live member per (mesh, key).
CREATE UNIQUE INDEX members_mesh_pubkey_live_key ON members (mesh_id, peer_pubkey) WHERE revoked_at IS NULL;
CREATE INDEX members_user_idx ON members (user_id) WHERE user_id IS NOT NULL;

CREATE TABLE permissions (
    id                     text PRIMARY KEY,
    mesh_id                text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
    member_id              text NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    can_invite             boolean NOT NULL DEFAULT false,
    can_deploy_mcp         boolean NOT NULL DEFAULT false,
    can_manage_files       boolean NOT NULL DEFAULT false,
    can_manage_vault       boolean NOT NULL DEFAULT false,
    can_manage_watches     boolean NOT NULL DEFAULT false,
    can_manage_webhooks    boolean NOT NULL DEFAULT false,
    can_write_state        boolean NOT NULL DEFAULT true,
    can_send               boolean NOT NULL DEFAULT true,
    can_use_tools          boolean NOT NULL DEFAULT true,
    can_delete_mesh        boolean NOT NULL DEFAULT false,
    can_manage_permissions boolean NOT NULL DEFAULT false,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mesh_id, member_id)
);

CREATE TABLE invites (
    id                text PRIMARY KEY,
    mesh_id           text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
    -- base64url(JSON v1 payload + signature): the /join lookup key.
    token             text NOT NULL UNIQUE,
    -- the v1 canonical string that was signed.
    token_bytes       text,
    -- 8-char short code for /i/<code> and v2 claims.
    code              text,
    max_uses          integer NOT NULL DEFAULT 1 CHECK (max_uses > 0),
    used_count        integer NOT NULL DEFAULT 0 CHECK (used_count >= 0),
    role              text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    preset            jsonb NOT NULL DEFAULT '{}',
    expires_at        timestamptz NOT NULL,
    created_by        text REFERENCES users (id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    version           integer NOT NULL DEFAULT 1,
    capability_v2     text,
    claimed_by_pubkey text
);
CREATE UNIQUE INDEX invites_code_key ON invites (code) WHERE code IS NOT NULL;
CREATE INDEX invites_mesh_idx ON invites (mesh_id);

-- Device-code login: the CLI polls until a signed-in user approves.
CREATE TABLE device_codes (
    id            text PRIMARY KEY,
    device_code   text NOT NULL UNIQUE,
    user_code     text NOT NULL,
    session_id    text NOT NULL UNIQUE,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'consumed', 'expired')),
    user_id       text REFERENCES users (id) ON DELETE CASCADE,
    hostname      text,
    platform      text,
    arch          text,
    ip_address    text,
    -- the minted bearer, held only until the CLI collects it.
    session_token text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    approved_at   timestamptz,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX device_codes_user_code_idx ON device_codes (user_code) WHERE status = 'pending';
CREATE INDEX device_codes_expires_idx ON device_codes (expires_at) WHERE status IN ('pending', 'approved');

-- Bearer tokens for /cli/*: opaque random strings, only their SHA-256 is stored.
CREATE TABLE cli_sessions (
    id             text PRIMARY KEY,
    user_id        text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_code_id text REFERENCES device_codes (id) ON DELETE SET NULL,
    hostname       text,
    platform       text,
    arch           text,
    token_hash     text NOT NULL UNIQUE,
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);
CREATE INDEX cli_sessions_user_idx ON cli_sessions (user_id) WHERE revoked_at IS NULL;

-- +goose Down
DROP TABLE cli_sessions;
DROP TABLE device_codes;
DROP TABLE invites;
DROP TABLE permissions;
DROP TABLE members;
DROP TABLE meshes;
DROP TABLE users;
