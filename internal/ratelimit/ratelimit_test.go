package ratelimit

import (
	"context"
	"testing"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestBurstThenRefuseThenRefill(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	l := Limiter{Q: db.New(d.Pool)}
	ctx := context.Background()
	allowed := 0
	for range 35 {
		ok, err := l.Allow(ctx, "k", 30, 30)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
		}
	}
	if allowed != 30 {
		t.Fatalf("allowed %d of 35 with burst 30, want 30", allowed)
	}
	// Another key has its own bucket.
	if ok, _ := l.Allow(ctx, "other", 30, 30); !ok {
		t.Fatal("independent key refused")
	}
	// Refill: pretend 2 s passed at 60/min => 2 tokens.
	if _, err := d.Pool.Exec(ctx, "UPDATE rate_buckets SET updated_at = updated_at - interval '2 seconds' WHERE key = 'k'"); err != nil {
		t.Fatal(err)
	}
	got := 0
	for range 5 {
		if ok, _ := l.Allow(ctx, "k", 30, 60); ok {
			got++
		}
	}
	if got != 2 {
		t.Fatalf("after 2 s at 60/min: %d tokens, want 2", got)
	}
	// Never above capacity after a long idle time.
	if _, err := d.Pool.Exec(ctx, "UPDATE rate_buckets SET updated_at = updated_at - interval '1 hour' WHERE key = 'k'"); err != nil {
		t.Fatal(err)
	}
	got = 0
	for range 15 {
		if ok, _ := l.Allow(ctx, "k", 10, 60); ok {
			got++
		}
	}
	if got != 10 {
		t.Fatalf("after an hour idle with capacity 10: %d tokens, want 10", got)
	}
}
