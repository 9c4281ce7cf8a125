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

func TestTimeOrderedSortsByTimeAndKeepsTheShape(t *testing.T) {
	shape := regexp.MustCompile(`^[0-9A-Za-z]{32}$`)
	times := []int64{0, 1, 61, 62, 1_763_900_000_000, 1_763_900_000_001, 1_763_900_060_000, 218_340_105_584_895}
	prev := ""
	for _, ms := range times {
		id := timeOrderedAt(ms)
		if !shape.MatchString(id) {
			t.Fatalf("%d: id %q is not 32 base62 characters", ms, id)
		}
		if id <= prev {
			t.Fatalf("%d: id %q does not sort after %q", ms, id, prev)
		}
		prev = id
	}
	if a, b := NewTimeOrdered(), NewTimeOrdered(); a == b || a[8:] == b[8:] {
		t.Fatalf("two ids share their random part: %q %q", a, b)
	}
}
