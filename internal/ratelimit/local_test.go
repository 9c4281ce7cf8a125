package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

// countingDB counts the statements sent to the database.
type countingDB struct {
	db.DBTX
	n atomic.Int64
}

func (c *countingDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c.n.Add(1)
	return c.DBTX.QueryRow(ctx, sql, args...)
}

func (c *countingDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c.n.Add(1)
	return c.DBTX.Exec(ctx, sql, args...)
}

// Local buckets in front of a shared one let at most their refill through to the database
// while it is spent — however many there are (two sessions of a member, one IP on two
// instances) — and never refuse what it allows once both have refilled.
func TestLocalBucketsInFrontOfAShared(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	cdb := &countingDB{DBTX: d.Pool}
	l := Limiter{Q: db.New(cdb)}
	ctx := context.Background()
	const burst, perMinute = 5, 0.006 // no refill within the test
	a, b := NewBucket(burst, perMinute/60), NewBucket(burst, perMinute/60)
	allowed := 0
	for i := range 100 {
		local := a
		if i%2 == 1 {
			local = b
		}
		ok, err := l.AllowBehind(ctx, local, "k", burst, perMinute)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
		}
	}
	if allowed != burst || cdb.n.Load() > burst+2 {
		t.Fatalf("%d allowed after %d queries, want %d allowed after at most %d (one refusal per local bucket)", allowed, cdb.n.Load(), burst, burst+2)
	}
	// Both refill at the same rate: after the shared bucket refused, the local one lets the
	// next request through as soon as the shared one has a token again.
	local := NewBucket(1, 1000)
	if ok, _ := l.AllowBehind(ctx, local, "fast", 1, 60_000); !ok {
		t.Fatal("first request refused")
	}
	if ok, _ := l.AllowBehind(ctx, NewBucket(1, 1000), "fast", 1, 60_000); ok {
		t.Fatal("the shared bucket allowed two at once")
	}
	time.Sleep(20 * time.Millisecond)
	if ok, err := l.AllowBehind(ctx, local, "fast", 1, 60_000); !ok || err != nil {
		t.Fatalf("after both refilled: %v %v", ok, err)
	}
}

// Buckets keeps one bucket per key and forgets full ones once the map has grown.
func TestBucketsPrune(t *testing.T) {
	k := NewBuckets(1, 1000) // refills in a millisecond
	if !k.Take("a", 1) || k.Take("a", 1) {
		t.Fatal("a bucket of one token")
	}
	if !k.Take("b", 1) {
		t.Fatal("keys share a bucket")
	}
	for i := range BucketsPrune - 2 { // the map holds BucketsPrune keys: no pruning yet
		k.Take(fmt.Sprint(i), 1)
	}
	time.Sleep(5 * time.Millisecond)
	k.Take("new", 1)
	if n := k.Len(); n != 1 {
		t.Fatalf("%d buckets after pruning full ones, want only the new one", n)
	}
}

// New keys cost amortised O(1) even when none of the buckets is full: the map is walked when
// it has doubled, not on every new key.
func TestBucketsPruneIsAmortised(t *testing.T) {
	k := NewBuckets(10, 0.001) // nothing refills within the test
	for i := range 5 * BucketsPrune {
		k.Take(fmt.Sprint(i), 1)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pruneAt < 4*BucketsPrune {
		t.Fatalf("after %d active keys the next pruning is at %d: pruning on (nearly) every key", 5*BucketsPrune, k.pruneAt)
	}
}
