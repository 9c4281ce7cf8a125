//go:build !unix

package inbox

// lockFile is a no-op where flock is missing: one process per inbox is then safe, several
// may show a message twice (never lose one).
func lockFile(string) (func(), error) { return func() {}, nil }
