package session

import (
	"testing"
	"time"
)

// A local bucket in front of a shared one, with refunds for what the shared one refuses,
// never refuses a request the shared one would allow.
func TestLocalBucketNeverStricterThanShared(t *testing.T) {
	shared := newBucket(5, 0.0001) // shared by this session and others
	local := newBucket(5, 0.0001)
	for range 3 { // other sessions of the member take most of the shared bucket
		shared.take(1)
	}
	allowed := 0
	for range 10 {
		if !local.take(1) {
			t.Fatal("the local bucket refused while the shared one still had tokens")
		}
		if !shared.take(1) {
			local.refund(1)
			break
		}
		allowed++
	}
	if allowed != 2 {
		t.Fatalf("allowed %d, want the 2 tokens the shared bucket had left", allowed)
	}
	if !local.take(1) { // the refund kept the local bucket ahead of the shared one
		t.Fatal("after the refund, the local bucket refused")
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
		k.take(string(rune(i+'c')), 1)
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
