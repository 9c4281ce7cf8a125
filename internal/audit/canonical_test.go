package audit

import (
	"encoding/json"
	"os"
	"testing"
	"time"
)

// The chain exported from the original broker's database: every hash must reproduce.
func TestOriginalChainVerifies(t *testing.T) {
	raw, err := os.ReadFile("testdata/original-audit-chain.json")
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	var fx struct {
		Rows []struct {
			ID        int64           `json:"id"`
			MeshID    string          `json:"mesh_id"`
			EventType string          `json:"event_type"`
			Actor     *string         `json:"actor_member_id"`
			Payload   json.RawMessage `json:"payload"`
			PrevHash  string          `json:"prev_hash"`
			Hash      string          `json:"hash"`
			CreatedAt string          `json:"created_at"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	if len(fx.Rows) < 5 {
		t.Fatalf("fixture has %d rows", len(fx.Rows))
	}
	var rows []Row
	for _, r := range fx.Rows {
		at, err := time.Parse(time.RFC3339Nano, r.CreatedAt)
		if err != nil {
			t.Fatal(err)
		}
		canon, err := CanonicalJSON(r.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if got := Hash(r.PrevHash, r.MeshID, r.EventType, r.Actor, canon, at); got != r.Hash {
			t.Errorf("row %d: hash %s, original wrote %s (canonical payload %s)", r.ID, got, r.Hash, canon)
		}
		rows = append(rows, Row{ID: r.ID, MeshID: r.MeshID, EventType: r.EventType, Actor: r.Actor,
			Payload: r.Payload, PrevHash: r.PrevHash, Hash: r.Hash, CreatedAt: at})
	}
	if v := Verify(rows); !v.Valid || v.Entries != len(rows) {
		t.Fatalf("Verify: %+v", v)
	}
	// Tampering with any field breaks verification at that row.
	tampered := append([]Row(nil), rows...)
	tampered[2].Payload = []byte(`{"priority":"low","targetSpec":"*"}`)
	if v := Verify(tampered); v.Valid || v.BrokenAt != rows[2].ID {
		t.Fatalf("tampered payload: %+v", v)
	}
	dropped := append(append([]Row(nil), rows[:3]...), rows[4:]...)
	if v := Verify(dropped); v.Valid || v.BrokenAt != rows[4].ID {
		t.Fatalf("dropped row: %+v", v)
	}
}

// The reference's audit-canonical cases.
func TestKeyOrderDoesNotMatterButArrayOrderDoes(t *testing.T) {
	at := time.Date(2026, 4, 15, 12, 0, 0, 0, time.UTC)
	actor := "actor"
	h := func(payload string) string {
		c, err := CanonicalJSON([]byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		return Hash("prev", "mesh1", "peer_joined", &actor, c, at)
	}
	a := h(`{"groups":[],"pubkey":"abc","restored":true}`)
	for _, p := range []string{`{"restored":true,"groups":[],"pubkey":"abc"}`, `{"pubkey":"abc","restored":true,"groups":[]}`} {
		if h(p) != a {
			t.Errorf("key order changed the hash: %s", p)
		}
	}
	if h(`{"x":{"b":1,"a":[1,2]}}`) != h(`{"x":{"a":[1,2],"b":1}}`) {
		t.Error("nested key order changed the hash")
	}
	if h(`{"x":[1,2]}`) == h(`{"x":[2,1]}`) {
		t.Error("array order did not change the hash")
	}
	if h(`{"groups":[],"pubkey":"abd","restored":true}`) == a {
		t.Error("a changed value did not change the hash")
	}
	if Hash(Genesis, "m", "peer_left", nil, "{}", at) == Hash(Genesis, "m", "peer_left", &actor, "{}", at) {
		t.Error("null actor and an actor hash the same")
	}
}

func TestCanonicalRendering(t *testing.T) {
	cases := map[string]string{
		`{"b":1,"a":"x"}`:             `{"a":"x","b":1}`,
		`"<a&b>"`:                     `"<a&b>"`,
		"\"\u2028\u2029\"":            "\"\u2028\u2029\"",
		`"tab\tnl\ncr\r\u0001\u001f"`: `"tab\tnl\ncr\r\u0001\u001f"`,
		`"q\"b\\"`:                    `"q\"b\\"`,
		`[1.0, 1e21, 1e-7, 0.1, -0, 123456789012345680000]`: `[1,1e+21,1e-7,0.1,0,123456789012345680000]`,
		`{"\ud83d\ude00":1,"\uffff":2}`:                     "{\"😀\":1,\"\uffff\":2}", // UTF-16 order: surrogates (D83D) before FFFF
		`null`:                                              `null`,
		`[true,false,null,{}]`:                              `[true,false,null,{}]`,
	}
	for in, want := range cases {
		got, err := CanonicalJSON([]byte(in))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("CanonicalJSON(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestFormatNumberMatchesJavaScript(t *testing.T) {
	// Values and what (x).toString() prints in JavaScript.
	cases := map[float64]string{
		0: "0", 1: "1", -1: "-1", 0.1: "0.1", 1.5: "1.5", 100: "100", 1e20: "100000000000000000000",
		1e21: "1e+21", 1.5e21: "1.5e+21", 1e-6: "0.000001", 1e-7: "1e-7", 1.25e-7: "1.25e-7",
		123.456: "123.456", 0.000123: "0.000123", 5e-324: "5e-324", 1.7976931348623157e308: "1.7976931348623157e+308",
		9007199254740993: "9007199254740992",
	}
	tenth, fifth := 0.1, 0.2 // variables: Go folds constant 0.1+0.2 exactly
	cases[tenth+fifth] = "0.30000000000000004"
	for f, want := range cases {
		if got := FormatNumber(f); got != want {
			t.Errorf("FormatNumber(%v) = %s, want %s", f, got, want)
		}
	}
}
