package notifier

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

type nopHandler struct{}

func (nopHandler) OnWake(_, _ []string)  {}
func (nopHandler) OnLogWake([]string)    {}
func (nopHandler) OnKick(string, int64)  {}
func (nopHandler) OnRevoke(string)       {}
func (nopHandler) OnKickSession(string)  {}
func (nopHandler) OnMeshArchived(string) {}
func (nopHandler) OnSystem([]byte)       {}
func (nopHandler) OnConnected()          {}

// The reconnect backoff doubles while connecting keeps failing, and starts again at
// 100 ms after every connection that was established: six database restarts in a row each
// cost ~100 ms of wake-ups, not a backoff grown to 5 s by the earlier outages.
func TestBackoffResetsAfterASuccessfulReconnect(t *testing.T) {
	// Each outage: the connection drops, then three attempts fail, then one succeeds.
	var script []bool // established per attempt
	for restart := 0; restart < 6; restart++ {
		script = append(script, true, false, false, false)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := NewListener("", nopHandler{}, slog.New(slog.DiscardHandler))
	attempt := 0
	l.listen = func(context.Context) (bool, error) {
		if attempt == len(script) {
			cancel()
			return false, ctx.Err()
		}
		established := script[attempt]
		attempt++
		return established, errors.New("connection lost")
	}
	var waits []time.Duration
	l.after = func(d time.Duration) <-chan time.Time {
		waits = append(waits, d)
		ch := make(chan time.Time, 1)
		ch <- time.Now()
		return ch
	}
	l.Run(ctx)
	if len(waits) != len(script) {
		t.Fatalf("%d waits for %d attempts", len(waits), len(script))
	}
	for i, d := range waits {
		want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}[i%4]
		if d != want {
			t.Fatalf("wait %d after attempt %d (established=%v) was %v, want %v (all: %v)", i, i, script[i], d, want, waits)
		}
	}
}

// Failures alone double the backoff up to 5 s and no further.
func TestBackoffIsCapped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	l := NewListener("", nopHandler{}, slog.New(slog.DiscardHandler))
	n := 0
	l.listen = func(context.Context) (bool, error) {
		if n++; n > 10 {
			cancel()
		}
		return false, errors.New("refused")
	}
	var last time.Duration
	l.after = func(d time.Duration) <-chan time.Time {
		last = d
		ch := make(chan time.Time, 1)
		ch <- time.Now()
		return ch
	}
	l.Run(ctx)
	if last != 5*time.Second {
		t.Fatalf("backoff after 10 failures %v, want 5s", last)
	}
}
