-- Pending audit events record their transaction too, so the chainer orders both sources the
-- same way.
--
-- Since migration 7 the chainer appends message_sent events only from transactions below the
-- oldest running one, while hello and close events in audit_pending were appended at once: a
-- peer_left queued after a message could be chained before that message's message_sent.
-- Transaction ids follow causality — a transaction that starts after another committed gets a
-- later id — so chaining both sources in transaction-id order, below one horizon computed
-- once per round, keeps every chain causally ordered. The default fills the column for every
-- writer, older brokers in a rolling deploy included; existing rows get this migration's
-- transaction, which has ended by the time anything reads them.

-- +goose Up
ALTER TABLE audit_pending ADD COLUMN audit_xid xid8 NOT NULL DEFAULT pg_current_xact_id();

-- +goose Down
ALTER TABLE audit_pending DROP COLUMN audit_xid;
