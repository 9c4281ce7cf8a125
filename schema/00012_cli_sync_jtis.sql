-- /cli-sync replay memory and token labels.
--
-- A /cli-sync token is single-use: its jti is remembered here until the token expires, so it
-- cannot be replayed against another instance (the original kept them in one process's
-- memory). Expired rows are deleted a few at a time by the statement that inserts a new one
-- (queries/cli_sync.sql), so the table holds roughly the tokens still valid.
--
-- cli_sessions.label names a token minted by `broker admin token create --label`.

-- +goose Up
CREATE TABLE cli_sync_jtis (
    jti        text PRIMARY KEY,
    used_at    timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX cli_sync_jtis_expires_idx ON cli_sync_jtis (expires_at);

ALTER TABLE cli_sessions ADD COLUMN label text;

-- +goose Down
ALTER TABLE cli_sessions DROP COLUMN label;
DROP TABLE cli_sync_jtis;
