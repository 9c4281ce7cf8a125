-- /cli-sync replay memory and token labels.
--
-- A /cli-sync token is single-use: its jti is remembered here until the token expires, so it
-- cannot be replayed against another instance (the original kept them in one process's
-- memory). Expired rows are deleted a few at a time by the statement that inserts a new one
-- (queries/cli_sync.sql), so the table holds roughly the tokens still valid.
--
-- cli_sessions.label names a token minted by `broker admin token create --label`.
--
-- Device codes are deleted an hour after they expire, a few at a time by the statement that
-- inserts a new one (POST /cli/device-code is open to anyone, so their history must not
-- grow without bound): device_codes_expires_all_idx finds them whatever their status, and
-- cli_sessions_device_code_idx serves the ON DELETE SET NULL of cli_sessions.device_code_id
-- (and the revocation of an approval nobody collected) without scanning cli_sessions.

-- +goose Up
CREATE TABLE cli_sync_jtis (
    jti        text PRIMARY KEY,
    used_at    timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX cli_sync_jtis_expires_idx ON cli_sync_jtis (expires_at);

ALTER TABLE cli_sessions ADD COLUMN label text;

CREATE INDEX device_codes_expires_all_idx ON device_codes (expires_at);
CREATE INDEX cli_sessions_device_code_idx ON cli_sessions (device_code_id) WHERE device_code_id IS NOT NULL;

-- +goose Down
DROP INDEX cli_sessions_device_code_idx;
DROP INDEX device_codes_expires_all_idx;
ALTER TABLE cli_sessions DROP COLUMN label;
DROP TABLE cli_sync_jtis;
