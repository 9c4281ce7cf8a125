// Package inbox keeps a peer's received messages on disk, decrypted, until they are read:
// one append-only JSON-lines file of messages per mesh and one of the ids read. A message
// is written and synced before the broker is told (client_ack), so a crash between the push
// and the acknowledgement loses nothing — the broker delivers it again, and the inbox keeps
// one copy (messages are deduplicated by id). Appends of one line are whole under O_APPEND,
// so the MCP server and a hook command may add and read the same inbox at once.
package inbox

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// Message is one received message.
type Message struct {
	ID            string    `json:"id"`
	MeshID        string    `json:"meshId"`
	From          string    `json:"from"`                 // the sender's pubkey (session key, else member key)
	FromMember    string    `json:"fromMember,omitempty"` // the sender's member key
	FromName      string    `json:"fromName,omitempty"`   // as the sender's peers list named it, when known
	Kind          string    `json:"kind"`                 // "direct", "broadcast" (or group), "system"
	Priority      string    `json:"priority"`
	Text          string    `json:"text"`
	Event         string    `json:"event,omitempty"` // system messages
	CreatedAt     string    `json:"createdAt,omitempty"`
	ReceivedAt    time.Time `json:"receivedAt"`
	Undecryptable bool      `json:"undecryptable,omitempty"` // kept, marked, rather than dropped
}

// Inbox is one mesh's inbox in a directory. Several processes may use one inbox (the MCP
// server, the hook command, meshpeer inbox): each change and each take of unread messages
// holds an exclusive lock on a lock file beside it (flock, where the system has it).
type Inbox struct {
	msgs, seen, lock string

	mu    sync.Mutex
	known map[string]struct{} // ids in the messages file up to read
	read  int64               // bytes of the messages file indexed in known
}

// Open returns the inbox of mesh meshID under dir (created when missing) for one reader: ""
// for the one-shot commands, ForProject(dir) for the Claude Code session working there (its
// MCP server stores, its hooks and tools read). Each reader has an inbox of its own: a
// broadcast reaches every session and each shows it to its own model; a message for the
// member reaches one session and only that one shows it.
func Open(dir, meshID, reader string) (*Inbox, error) {
	d := filepath.Join(dir, "inbox")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, fmt.Errorf("create inbox: %w", err)
	}
	name := fileName(meshID)
	if reader != "" {
		name += "." + fileName(reader)
	}
	return &Inbox{msgs: filepath.Join(d, name+".jsonl"), seen: filepath.Join(d, name+".seen"), lock: filepath.Join(d, name+".lock")}, nil
}

// fileName is a mesh id as a file name: itself when it is plainly one, else a hash of it —
// the id comes from an invite, untrusted, and must not name a path outside the inbox.
func fileName(meshID string) string {
	if safeName.MatchString(meshID) {
		return meshID
	}
	sum := sha256.Sum256([]byte(meshID))
	return "mesh-" + hex.EncodeToString(sum[:16])
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ForProject is the reader of the Claude Code session working in dir.
func ForProject(dir string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(dir)))
	return "project-" + hex.EncodeToString(sum[:12])
}

// Add appends messages not already in the inbox and syncs the file: when Add returns nil,
// they survive a crash. It returns how many were new. The ids already stored are kept in
// memory and only what other processes appended since is read again, so a long-lived
// receiver does not read the whole inbox for every message.
func (in *Inbox) Add(msgs ...Message) (int, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	unlock, err := lockFile(in.lock)
	if err != nil {
		return 0, err
	}
	defer unlock()
	if err := in.index(); err != nil {
		return 0, err
	}
	var fresh []any
	for _, m := range msgs {
		if _, dup := in.known[m.ID]; !dup {
			in.known[m.ID] = struct{}{}
			fresh = append(fresh, m)
		}
	}
	if err := appendLines(in.msgs, fresh); err != nil {
		in.known = nil // what was added to known may not be stored: index again next time
		return 0, err
	}
	return len(fresh), in.index()
}

// index brings known up to the end of the messages file. Caller holds mu and the lock.
func (in *Inbox) index() error {
	st, err := os.Stat(in.msgs)
	if errors.Is(err, os.ErrNotExist) {
		in.known, in.read = map[string]struct{}{}, 0
		return nil
	}
	if err != nil {
		return fmt.Errorf("read inbox: %w", err)
	}
	if in.known == nil || st.Size() < in.read {
		in.known, in.read = map[string]struct{}{}, 0 // first use, or the file was replaced
	}
	if st.Size() == in.read {
		return nil
	}
	n, err := readLinesFrom(in.msgs, in.read, func(line []byte) {
		var x struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(line, &x) == nil && x.ID != "" {
			in.known[x.ID] = struct{}{}
		}
	})
	in.read = n
	return err
}

// Take returns the unread messages, oldest first, and marks them read, under the lock: two
// processes taking at once never both get a message.
func (in *Inbox) Take() ([]Message, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	unlock, err := lockFile(in.lock)
	if err != nil {
		return nil, err
	}
	defer unlock()
	msgs, err := in.Unseen()
	if err != nil || len(msgs) == 0 {
		return msgs, err
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return msgs, in.MarkSeen(ids...)
}

// Unseen returns the messages not yet marked seen, oldest first.
func (in *Inbox) Unseen() ([]Message, error) {
	all, err := in.All()
	if err != nil {
		return nil, err
	}
	seen, err := in.ids(in.seen)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, m := range all {
		if _, ok := seen[m.ID]; !ok {
			seen[m.ID] = struct{}{} // a line stored twice (two writers without flock) shows once
			out = append(out, m)
		}
	}
	return out, nil
}

// All returns every message in the inbox, oldest first.
func (in *Inbox) All() ([]Message, error) {
	var out []Message
	err := readLines(in.msgs, func(line []byte) {
		var m Message
		if json.Unmarshal(line, &m) == nil && m.ID != "" {
			out = append(out, m)
		}
	})
	return out, err
}

// MarkSeen records ids as read (synced).
func (in *Inbox) MarkSeen(ids ...string) error {
	lines := make([]any, len(ids))
	for i, id := range ids {
		lines[i] = map[string]string{"id": id}
	}
	return appendLines(in.seen, lines)
}

// ids is the set of "id" fields in a JSON-lines file.
func (in *Inbox) ids(path string) (map[string]struct{}, error) {
	set := map[string]struct{}{}
	err := readLines(path, func(line []byte) {
		var x struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(line, &x) == nil && x.ID != "" {
			set[x.ID] = struct{}{}
		}
	})
	return set, err
}

// readLines calls fn for each line of path; a missing file has none. A torn last line (a
// crash in the middle of an append) is skipped by fn's JSON decoding.
func readLines(path string, fn func([]byte)) error {
	_, err := readLinesFrom(path, 0, fn)
	return err
}

// readLinesFrom is readLines from byte offset from; it returns the offset it read to.
func readLinesFrom(path string, from int64, fn func([]byte)) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return from, fmt.Errorf("read inbox: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return from, fmt.Errorf("read inbox: %w", err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	at := from
	for {
		line, err := r.ReadBytes('\n')
		at += int64(len(line))
		if len(line) > 0 && len(line) <= maxLine {
			fn(line)
		}
		if errors.Is(err, io.EOF) {
			return at, nil
		}
		if err != nil {
			return at, fmt.Errorf("read inbox: %w", err)
		}
	}
}

// maxLine skips a line no message could make (a broker's messages are far smaller), rather
// than failing every later read — which would stop every acknowledgement.
const maxLine = 64 << 20

// appendLines writes each value as one JSON line in a single write, then syncs.
func appendLines(path string, values []any) error {
	if len(values) == 0 {
		return nil
	}
	var buf []byte
	for _, v := range values {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		buf = append(append(buf, b...), '\n')
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("write inbox: %w", err)
	}
	// A crash in the middle of an earlier append left a torn last line: end it first, or
	// the first line of this append would be glued to it and lost.
	if st, serr := f.Stat(); serr == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if _, rerr := f.ReadAt(last, st.Size()-1); rerr == nil && last[0] != '\n' {
			buf = append([]byte{'\n'}, buf...)
		}
	}
	_, err = f.Write(buf)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write inbox: %w", err)
	}
	return nil
}
