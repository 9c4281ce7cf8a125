package inbox

import (
	"os"
	"testing"
)

// Whatever an inbox file holds (torn lines, foreign JSON, binary), reading it never panics,
// and a message added after it is stored and taken exactly once.
func FuzzInboxFile(f *testing.F) {
	f.Add([]byte(`{"id":"a","text":"x"}` + "\n" + `{"id":"b"`))
	f.Add([]byte("\x00\xff{\n\n[]\n\"id\"\n"))
	f.Add([]byte(`{"id":"new","text":"already here"}`))
	f.Add([]byte(`{"id":"new"}` + "\n" + `{"id":"new"}` + "\n"))
	f.Fuzz(func(t *testing.T, content []byte) {
		in, err := Open(t.TempDir(), "m", "")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(in.msgs, content, 0o600); err != nil {
			t.Fatal(err)
		}
		before, err := in.All()
		if err != nil {
			t.Fatal(err)
		}
		had := false
		for _, m := range before {
			had = had || m.ID == "new"
		}
		n, err := in.Add(Message{ID: "new", Text: "fresh"})
		if err != nil || (n == 1) == had {
			t.Fatalf("add after %q: %d %v (already there: %v)", content, n, err, had)
		}
		taken, err := in.Take()
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		for _, m := range taken {
			if m.ID == "new" {
				count++
			}
		}
		if count != 1 {
			t.Fatalf("the message taken %d times after %q", count, content)
		}
		if again, _ := in.Take(); len(again) != 0 {
			t.Fatalf("taken twice: %+v", again)
		}
	})
}
