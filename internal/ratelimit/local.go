package ratelimit

import (
	"context"
	"sync"
	"time"
)

// Bucket is a token bucket in this process's memory: a budget of one session, or, through
// Buckets, of one key (a client IP, a member) on this instance. Safe for concurrent use.
type Bucket struct {
	mu     sync.Mutex
	tokens float64 // guarded by mu
	at     time.Time
	burst  float64
	rate   float64 // tokens per second
}

// NewBucket returns a full bucket of burst tokens refilled at perSecond.
func NewBucket(burst, perSecond float64) *Bucket {
	return &Bucket{tokens: burst, burst: burst, rate: perSecond, at: time.Now()}
}

// PerMinute is a bucket's parameters for a limit of n a minute that may all come at once
// (the shape of the shared buckets); n <= 0 is no limit.
func PerMinute(n int) (burst, perSecond float64) {
	if n <= 0 {
		return 1e18, 1e18
	}
	return float64(n), float64(n) / 60
}

// Take removes n tokens; false (and nothing taken) when fewer are left.
func (b *Bucket) Take(n float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	b.at = now
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

func (b *Bucket) idleSince(cut time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.at.Before(cut)
}

// AllowBehind takes a token from the shared bucket key (same parameters as local) only if
// the local bucket in front of it has one: a request the local bucket refuses costs no
// query. When the shared bucket refuses, the local one is emptied: the shared one is empty
// then, so the local one stays at most a token stricter, and each local bucket (each
// session of a member, each instance an IP reaches) lets at most its refill rate through to
// the database while the shared one is spent. (Giving the token back instead kept every
// local bucket full while the shared one refused: two sessions of a member sent 12 900
// refused sends a second to Postgres.) When the database failed, the token is given back.
func (l Limiter) AllowBehind(ctx context.Context, local *Bucket, key string, burst, perMinute float64) (bool, error) {
	if !local.Take(1) {
		return false, nil
	}
	ok, err := l.Allow(ctx, key, burst, perMinute)
	local.mu.Lock()
	defer local.mu.Unlock()
	switch {
	case err != nil:
		local.tokens = min(local.burst, local.tokens+1)
	case !ok:
		local.tokens, local.at = 0, time.Now()
	}
	return ok, err
}

// Buckets is a Bucket per key. Buckets that have refilled are forgotten when the map has
// doubled since the last pruning (a walk of the map per so many new keys, not per key), so
// it holds only recently active keys. Safe for concurrent use.
type Buckets struct {
	mu      sync.Mutex
	m       map[string]*Bucket // guarded by mu
	pruneAt int                // map size that triggers the next pruning; guarded by mu
	burst   float64
	rate    float64
}

// BucketsPrune is the smallest map size at which full buckets are dropped.
const BucketsPrune = 10000

// NewBuckets returns buckets of burst tokens refilled at perSecond, one per key.
func NewBuckets(burst, perSecond float64) *Buckets {
	return &Buckets{m: map[string]*Bucket{}, pruneAt: BucketsPrune, burst: burst, rate: perSecond}
}

// Take removes n tokens from key's bucket; false when it has fewer.
func (k *Buckets) Take(key string, n float64) bool { return k.Get(key).Take(n) }

// Len is how many keys have a bucket.
func (k *Buckets) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// Get returns key's bucket, creating it full.
func (k *Buckets) Get(key string) *Bucket {
	k.mu.Lock()
	defer k.mu.Unlock()
	if b := k.m[key]; b != nil {
		return b
	}
	if len(k.m) >= k.pruneAt {
		cut := time.Now().Add(-time.Duration(k.burst / k.rate * float64(time.Second)))
		for key, old := range k.m {
			if old.idleSince(cut) {
				delete(k.m, key)
			}
		}
		k.pruneAt = max(BucketsPrune, 2*len(k.m))
	}
	b := NewBucket(k.burst, k.rate)
	k.m[key] = b
	return b
}
