package session

import (
	"strings"
	"testing"
	"time"
)

// A client_ack socket's cursor stops below its first unacknowledged push, whatever was
// written after it, and moves once the acknowledgements close the gap.
func TestLogCursorWaitsForTheFirstUnacknowledgedPush(t *testing.T) {
	c := &logCursor{epoch: "e", byID: map[string]int64{}}
	for _, seq := range []int64{3, 5, 6} { // 4 was skipped: not for this presence
		c.flight = append(c.flight, logFlight{seq: seq, at: time.Now()})
	}
	c.written = 7 // everything written, a cursor-only frame at 7 included
	if d := c.done(); d != 2 {
		t.Fatalf("done = %d with 3 unacknowledged, want 2", d)
	}
	c.flight[1].acked = true // 5
	if d := c.done(); d != 2 {
		t.Fatalf("done = %d with 3 still unacknowledged, want 2", d)
	}
	c.flight[0].acked = true // 3: 3..5 done, 6 not
	if d := c.done(); d != 5 {
		t.Fatalf("done = %d with 6 unacknowledged, want 5", d)
	}
	c.flight[0].acked = true // now 6 (the acked ones were dropped from the front)
	if d := c.done(); d != 7 {
		t.Fatalf("done = %d with all acknowledged, want the written 7", d)
	}
}

// A frame read before the positions were reset (lease expiry, new epoch: a newer gen) no
// longer moves the cursor when it is written: the entries it covered are read again, and
// the cursor must not pass pushes the client never acknowledged.
func TestLogFrameOfAnOlderReadDoesNotMoveTheCursor(t *testing.T) {
	h := &Hub{logMarks: make(chan logMark, 4)}
	s := &Session{hub: h, presenceID: "p", epoch: 1}
	s.log = logCursor{epoch: "e", gen: 2, next: 4, written: 4, stored: 4}
	s.logWrittenTo(30, 1) // queued by the read of gen 1, written after the reset
	if s.log.written != 4 || len(h.logMarks) != 0 {
		t.Fatalf("a stale frame moved the cursor: written %d, %d marks", s.log.written, len(h.logMarks))
	}
	s.logWrittenTo(9, 2)
	if m := <-h.logMarks; s.log.written != 9 || m.seq != 9 || m.conn != 1 || m.epoch != "e" {
		t.Fatalf("a current frame: written %d, mark %+v; want 9, stored by connection 1", s.log.written, m)
	}
}

// One sender's direct and broadcast messages reach a recipient in the order they were
// stored, though they come from two reads.
func TestMergePushesKeepsStoredOrder(t *testing.T) {
	at := time.Unix(1000, 0)
	direct := []outFrame{{msgID: "a1", storedAt: at}, {msgID: "a4", storedAt: at.Add(2 * time.Millisecond)}}
	logged := []outFrame{
		{data: []byte("missed")},
		{msgID: "a2", storedAt: at, logSeq: 7},
		{msgID: "a3", storedAt: at.Add(time.Millisecond), logSeq: 8},
		{logSeq: 9}, // cursor-only
	}
	var got []string
	for _, f := range mergePushes(direct, logged) {
		switch {
		case f.msgID != "":
			got = append(got, f.msgID)
		case f.data != nil:
			got = append(got, "missed")
		default:
			got = append(got, "cursor")
		}
	}
	want := "missed a1 a2 a3 a4 cursor"
	if s := strings.Join(got, " "); s != want {
		t.Fatalf("merged: %s; want %s", s, want)
	}
}
