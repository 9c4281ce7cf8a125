// Package jobs holds the broker's periodic work: the instance's registration and heartbeat,
// the dead-instance scan (their presences enter the grace window), the grace-expiry scan
// (those presences end), the status TTL sweep, the purge, and the queue-depth gauge. Each
// job is a small SQL statement run on a jittered ticker; jobs that change shared state take
// a transaction-scoped advisory lock so that, with many instances, each runs once per period
// across the fleet.
//
// The jobs hold no sockets. Where one must act on the sessions this instance holds (ending a
// presence announces peer_left and closes its socket; a late heartbeat takes back the live
// sockets' presences), it goes through Presences, which session.Hub implements; this package
// never imports session.
//
// Concurrency: a Runner's Maintain, SweepStatuses and Purge each run on one goroutine of
// their own until their context ends; SweepStatusesOnce, PurgeOnce and StopInstance may be
// called from anywhere.
package jobs
