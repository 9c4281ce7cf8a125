// Package session serves peers on /ws: one Session per socket (handshake, read loop,
// writer, liveness) and one Hub per instance, which knows this instance's sessions by
// presence, member and mesh, receives cross-instance notifications (wake-ups, takeovers,
// system events), and runs the delivery loop: claim a presence's deliverable rows with a
// lease, push them, and mark them delivered once the socket write succeeded (or when the
// client acknowledges them, for client_ack clients).
//
// Concurrency: the Hub's maps are guarded by Hub.mu. Each Session has exactly one reader
// goroutine (its read loop) and one writer goroutine fed by a byte-bounded queue; anything
// may enqueue frames for a session, nothing else writes to its socket.
package session
