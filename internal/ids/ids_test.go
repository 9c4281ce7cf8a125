package ids

import (
	"regexp"
	"testing"
)

func TestShapeAndUniqueness(t *testing.T) {
	shape := regexp.MustCompile(`^[0-9A-Za-z]{32}$`)
	seen := make(map[string]bool, 10000)
	counts := map[rune]int{}
	for range 10000 {
		id := New()
		if !shape.MatchString(id) {
			t.Fatalf("id %q is not 32 base62 characters", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		for _, r := range id {
			counts[r]++
		}
	}
	// 320 000 characters over 62 symbols: each expected ~5161 times. A broken sampler
	// (say, never emitting the last symbols) falls far outside these bounds.
	if len(counts) != 62 {
		t.Fatalf("only %d distinct symbols used", len(counts))
	}
	for r, n := range counts {
		if n < 4500 || n > 5900 {
			t.Errorf("symbol %q appeared %d times, expected about 5161", r, n)
		}
	}
}
