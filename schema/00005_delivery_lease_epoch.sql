-- Leases record which socket of a presence took them.
--
-- A presence's socket is identified by the presence and its connection_epoch (bumped on every
-- takeover). A lease taken by an older socket — one whose claim committed just after a
-- takeover had released the presence's leases — is void for the new socket, which may claim
-- the row at once instead of waiting out the lease; and a socket that no longer owns its
-- presence claims nothing.

-- +goose Up
ALTER TABLE deliveries ADD COLUMN claimed_epoch bigint;

-- +goose Down
ALTER TABLE deliveries DROP COLUMN claimed_epoch;
