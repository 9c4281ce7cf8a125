// Package protocol is the claudemesh v0.1 wire format (PROTOCOL.md, reference §2): one UTF-8
// JSON object per WebSocket text frame, discriminated by "type". It decodes client frames
// into typed values with clear errors, defines the broker's frames, and holds the stable
// error codes and close codes a client may match on.
//
// Decoding never panics on any input (fuzzed); it allocates in proportion to the frame,
// whose size the session caps before calling Decode. The package has no state.
package protocol
