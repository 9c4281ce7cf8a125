package session

import (
	"fmt"
	"testing"
	"time"
)

// Local buckets in front of a shared one let at most their refill through to it while it
// is spent — however many there are (two sessions of a member, one IP on two instances) —
// and are at most a token stricter than it.
func TestLocalBucketsInFrontOfAShared(t *testing.T) {
	shared := newBucket(5, 0.0001)
	a, b := newBucket(5, 0.0001), newBucket(5, 0.0001)
	reached := 0
	for i := range 100 {
		local := a
		if i%2 == 1 {
			local = b
		}
		if !local.take(1) {
			continue
		}
		reached++
		if !shared.take(1) {
			local.drain()
		}
	}
	if reached > 7 { // 5 allowed, then one refused per local bucket
		t.Fatalf("%d requests reached the shared bucket, want at most 7", reached)
	}
	// One session alone after the others stopped: the shared bucket's refill reaches it.
	shared2, local2 := newBucket(2, 1000), newBucket(2, 1000)
	shared2.take(1)
	shared2.take(1)
	if !local2.take(1) || shared2.take(1) {
		t.Fatal("setup")
	}
	local2.drain()
	time.Sleep(5 * time.Millisecond)
	if !local2.take(1) || !shared2.take(1) {
		t.Fatal("after both refilled, the local bucket refused or the shared one did")
	}
}

// keyedBuckets keeps one bucket per key and forgets full ones when it grows.
func TestKeyedBucketsPrune(t *testing.T) {
	k := newKeyedBuckets(1, 1000) // refills in a millisecond
	if !k.take("a", 1) || k.take("a", 1) {
		t.Fatal("a bucket of one token")
	}
	if !k.take("b", 1) {
		t.Fatal("keys share a bucket")
	}
	for i := range keyedBucketsPrune - 2 { // the map holds keyedBucketsPrune keys: no pruning yet
		k.take(fmt.Sprint(i), 1)
	}
	time.Sleep(5 * time.Millisecond)
	k.take("new", 1)
	k.mu.Lock()
	n := len(k.m)
	k.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d buckets after pruning full ones, want only the new one", n)
	}
}

// New keys cost amortised O(1) even when none of the buckets is full: the map is walked when
// it has doubled, not on every new key.
func TestKeyedBucketsPruneIsAmortised(t *testing.T) {
	k := newKeyedBuckets(10, 0.001) // nothing refills within the test
	for i := range 5 * keyedBucketsPrune {
		k.take(fmt.Sprint(i), 1)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pruneAt < 4*keyedBucketsPrune {
		t.Fatalf("after %d active keys the next pruning is at %d: pruning on (nearly) every key", 5*keyedBucketsPrune, k.pruneAt)
	}
}
