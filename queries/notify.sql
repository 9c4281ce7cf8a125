-- Cross-instance wake-ups (LISTEN/NOTIFY). A hint only: rows are the truth, and every
-- instance also polls.

-- name: Notify :exec
SELECT pg_notify(@channel::text, @payload::text);

-- name: NotifyMany :exec
-- Several notifications in one statement. Sent in a transaction of their own, after the data
-- they announce committed: a notifying commit holds a cluster-wide lock through its WAL
-- flush, so notifying from inside write transactions would serialise them all.
SELECT pg_notify(@channel::text, unnest(@payloads::text[]));
