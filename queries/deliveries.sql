-- Per-recipient delivery state.

-- name: CountPendingDeliveries :one
-- The broker_queue_depth gauge: deliveries not yet delivered and not expired.
SELECT count(*) FROM deliveries
WHERE delivered_at IS NULL AND expires_at > now();
