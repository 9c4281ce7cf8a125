package invitestore

import (
	"context"
	"strings"
	"testing"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// A code that is taken is drawn again, up to three times; the third collision fails the
// creation and leaves nothing behind (no row, no audit event).
func TestCodeCollisionsAreRedrawn(t *testing.T) {
	d := testdb.New(t)
	q := db.New(d.Pool)
	ctx := context.Background()
	m, err := admin.CreateMesh(ctx, q, "codes")
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := q.LiveMesh(ctx, m.MeshID)
	if err != nil {
		t.Fatal(err)
	}
	params := Params{Mesh: mesh, Role: "member", BrokerURL: "wss://b/ws", AppURL: "https://a/"}
	first, err := Create(ctx, d.Pool, params)
	if err != nil {
		t.Fatal(err)
	}
	if first.URL != "https://a/i/"+first.Code || first.MaxUses != 1 {
		t.Fatalf("created %+v", first)
	}

	var drawn []string
	draw := func(codes ...string) {
		i := 0
		newCode = func() string {
			c := codes[min(i, len(codes)-1)]
			i++
			drawn = append(drawn, c)
			return c
		}
	}
	t.Cleanup(func() { newCode = invite.NewCode })

	draw(first.Code, first.Code, "FRESH234")
	second, err := Create(ctx, d.Pool, params)
	if err != nil || second.Code != "FRESH234" || len(drawn) != 3 {
		t.Fatalf("after two collisions: %+v, %v (drawn %v)", second, err, drawn)
	}

	drawn = nil
	draw(first.Code)
	if _, err := Create(ctx, d.Pool, params); err == nil || !strings.Contains(err.Error(), "attempt 3") || len(drawn) != 3 {
		t.Fatalf("three collisions: %v (drawn %v)", err, drawn)
	}
	var invites, events int
	if err := d.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM invites), (SELECT count(*) FROM audit_log WHERE event_type = 'invite_created')`).
		Scan(&invites, &events); err != nil {
		t.Fatal(err)
	}
	if invites != 2 || events != 2 {
		t.Fatalf("%d invites and %d invite_created events, want 2 and 2", invites, events)
	}
}

func TestCreateRefusesBadParams(t *testing.T) {
	for _, p := range []Params{{Role: "owner"}, {Role: "member", MaxUses: -1}, {Role: "member", MaxUses: MaxMaxUses + 1},
		{Role: "member", ExpiresIn: -1}, {Role: "member", ExpiresIn: MaxExpiresIn + 1}} {
		if _, err := Create(context.Background(), nil, p); err == nil {
			t.Errorf("Create(%+v) accepted", p)
		}
	}
}
