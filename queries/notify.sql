-- Cross-instance wake-ups (LISTEN/NOTIFY). A hint only: rows are the truth, and every
-- instance also polls.

-- name: Notify :exec
SELECT pg_notify(@channel::text, @payload::text);
