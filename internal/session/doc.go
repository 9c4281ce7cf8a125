// Package session is the socket and the hub: one Session per WebSocket on /ws (handshake,
// read loop, writer, liveness) and one Hub per instance, which knows this instance's
// sessions by presence, member and mesh, answers their frames, receives cross-instance
// notifications (wake-ups, takeovers, revokes, kicks, system events), and runs the claim.
//
// The delivery path, write → claim → socket: a send is written as rows by package delivery
// (StoreBatch, then a wake-up NOTIFY); the notification (or the poll) marks the recipient's
// presences held here dirty, and a claim worker leases their deliverable rows (claim.go);
// the rows are enqueued on the sockets and written by each one's drainer, and marked
// delivered once the socket write succeeded — or when the client acknowledges them, for
// client_ack clients (session.go).
//
// What needs no socket lives elsewhere: the presence rules (statuses, hook signals, ending
// a presence in the database) in package presence, which this package calls; the periodic
// jobs (heartbeat, dead instances, grace expiry, status sweep, purge) in package jobs, which
// acts on the hub through jobs.Presences.
//
// Concurrency: the Hub's maps are guarded by Hub.mu. Each Session has exactly one reader
// goroutine (its read loop) and one writer goroutine fed by a byte-bounded queue; anything
// may enqueue frames for a session, nothing else writes to its socket.
package session
