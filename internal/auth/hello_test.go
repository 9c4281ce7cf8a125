package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/admin"
	"github.com/meshbroker/meshbroker/internal/protocol"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type peer struct {
	pub, sessPub   string
	sec, sessSec   ed25519.PrivateKey
	meshID, member string
}

func newKey(t *testing.T) (string, ed25519.PrivateKey) {
	t.Helper()
	pub, sec, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(pub), sec
}

type store struct {
	PGStore
	Pool *pgxpool.Pool
}

// setup makes a mesh with one member in a fresh database.
func setup(t *testing.T) (store, peer) {
	t.Helper()
	d := testdb.New(t)
	q := db.New(d.Pool)
	ctx := context.Background()
	mesh, err := admin.CreateMesh(ctx, q, "auth test")
	if err != nil {
		t.Fatal(err)
	}
	p := peer{meshID: mesh.MeshID}
	p.pub, p.sec = newKey(t)
	p.sessPub, p.sessSec = newKey(t)
	m, err := admin.AddMember(ctx, q, mesh.MeshID, p.pub, "alice", "member")
	if err != nil {
		t.Fatal(err)
	}
	p.member = m.MemberID
	return store{PGStore: PGStore{Q: q}, Pool: d.Pool}, p
}

func (p peer) hello(now time.Time) *protocol.Hello {
	ts := now.UnixMilli()
	return &protocol.Hello{
		MeshID: p.meshID, MemberID: p.member, Pubkey: p.pub, SessionPubkey: p.sessPub,
		SessionID: "s-1", Pid: 1, Cwd: "/w", Timestamp: ts, HasTimestamp: true,
		Signature:  Sign(p.sec, CanonicalHello(p.meshID, p.member, p.pub, ts)),
		SessionSig: Sign(p.sessSec, CanonicalSessionProof(p.meshID, p.pub, p.sessPub, ts)),
	}
}

func code(err error) string {
	var r *Rejection
	if errors.As(err, &r) {
		return r.Code
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return ""
}

func TestValidHelloAcceptedOnceThenReplayed(t *testing.T) {
	t.Parallel()
	st, p := setup(t)
	ctx, now := context.Background(), time.Now()
	h := p.hello(now)
	m, err := VerifyHello(ctx, st, h, now, Options{MaxPresencesPerMesh: 100, RequireSessionProof: true})
	if err != nil || m.ID != p.member || m.DisplayName != "alice" {
		t.Fatalf("valid hello: %+v %v", m, err)
	}
	if c := code(func() error { _, err := VerifyHello(ctx, st, h, now, Options{}); return err }()); c != protocol.CodeReplayed {
		t.Fatalf("replayed hello: %q", c)
	}
	// Same signature in upper case is the same signature.
	h2 := *h
	h2.Signature = strings.ToUpper(h.Signature)
	if c := code(func() error { _, err := VerifyHello(ctx, st, &h2, now, Options{}); return err }()); c != protocol.CodeReplayed {
		t.Fatalf("upper-cased replay: %q", c)
	}
}

func TestEachCheckInOrder(t *testing.T) {
	t.Parallel()
	st, p := setup(t)
	ctx, now := context.Background(), time.Now()
	other, otherSec := newKey(t)
	cases := []struct {
		name   string
		mutate func(h *protocol.Hello)
		opt    Options
		want   string
	}{
		{"upper-case session key", func(h *protocol.Hello) { h.SessionPubkey = strings.ToUpper(h.SessionPubkey) }, Options{}, protocol.CodeBadSessionPubkey},
		{"short session key", func(h *protocol.Hello) { h.SessionPubkey = "abc" }, Options{}, protocol.CodeBadSessionPubkey},
		{"timestamp 61 s old", func(h *protocol.Hello) { h.Timestamp -= 61_000 }, Options{}, protocol.CodeTimestampSkew},
		{"timestamp 61 s ahead", func(h *protocol.Hello) { h.Timestamp += 61_000 }, Options{}, protocol.CodeTimestampSkew},
		{"no timestamp", func(h *protocol.Hello) { h.HasTimestamp = false }, Options{}, protocol.CodeTimestampSkew},
		{"timestamp 2^53 ms (a saturating duration)", func(h *protocol.Hello) { h.Timestamp = 1 << 53 }, Options{}, protocol.CodeTimestampSkew},
		{"timestamp -2^53 ms", func(h *protocol.Hello) { h.Timestamp = -(1 << 53) }, Options{}, protocol.CodeTimestampSkew},
		{"pubkey not hex", func(h *protocol.Hello) { h.Pubkey = "not-hex" }, Options{}, protocol.CodeMalformed},
		{"signature wrong length", func(h *protocol.Hello) { h.Signature = "abc123" }, Options{}, protocol.CodeMalformed},
		{"no session id", func(h *protocol.Hello) { h.SessionID = "" }, Options{}, protocol.CodeMalformed},
		{"signed by another key", func(h *protocol.Hello) {
			h.Signature = Sign(otherSec, CanonicalHello(h.MeshID, h.MemberID, h.Pubkey, h.Timestamp))
		}, Options{}, protocol.CodeBadSignature},
		{"tampered mesh id", func(h *protocol.Hello) { h.MeshID = "other-mesh" }, Options{}, protocol.CodeBadSignature},
		{"unknown member key", func(h *protocol.Hello) {
			h.Pubkey = other
			h.Signature = Sign(otherSec, CanonicalHello(h.MeshID, h.MemberID, h.Pubkey, h.Timestamp))
		}, Options{}, protocol.CodeUnauthorized},
		{"memberId of someone else", func(h *protocol.Hello) {
			h.MemberID = "someone-else"
			h.Signature = Sign(p.sec, CanonicalHello(h.MeshID, h.MemberID, h.Pubkey, h.Timestamp))
		}, Options{}, protocol.CodeUnauthorized},
		{"session proof by the wrong key", func(h *protocol.Hello) {
			h.SessionSig = Sign(otherSec, CanonicalSessionProof(h.MeshID, h.Pubkey, h.SessionPubkey, h.Timestamp))
		}, Options{}, protocol.CodeBadSessionProof},
		{"proof required but absent", func(h *protocol.Hello) { h.SessionSig = "" }, Options{RequireSessionProof: true}, protocol.CodeBadSessionProof},
		// Order: a bad session key is reported before a bad timestamp, a bad timestamp before malformed keys.
		{"bad session key and skew", func(h *protocol.Hello) { h.SessionPubkey = "x"; h.Timestamp = 0 }, Options{}, protocol.CodeBadSessionPubkey},
		{"skew and malformed", func(h *protocol.Hello) { h.Timestamp = 0; h.Pubkey = "zz" }, Options{}, protocol.CodeTimestampSkew},
	}
	for _, c := range cases {
		h := p.hello(now)
		c.mutate(h)
		_, err := VerifyHello(ctx, st, h, now, c.opt)
		if got := code(err); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
	// Without a session proof and without the requirement, a hello is accepted.
	h := p.hello(now)
	h.SessionSig = ""
	if _, err := VerifyHello(ctx, st, h, now, Options{}); err != nil {
		t.Fatalf("hello without sessionSig: %v", err)
	}
}

func TestCapacityCountsLivePresences(t *testing.T) {
	t.Parallel()
	st, p := setup(t)
	ctx, now := context.Background(), time.Now()
	// Two live presences (one inside its grace window) and one ended presence.
	for i, state := range []string{"live", "grace", "ended"} {
		_, err := st.Pool.Exec(ctx, `INSERT INTO presences (id, mesh_id, member_id, identity_key, session_id, pid, cwd, disconnected_at, ended_at)
			VALUES ($1, $2, $3, $1, 's', 1, '/',
			        CASE WHEN $4 = 'grace' THEN now() END, CASE WHEN $4 = 'ended' THEN now() END)`,
			"p"+string(rune('0'+i)), p.meshID, p.member, state)
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := VerifyHello(ctx, st, p.hello(now), now, Options{MaxPresencesPerMesh: 2}); code(err) != protocol.CodeCapacity {
		t.Fatalf("mesh at 2 of 2: %v", err)
	}
	if _, err := VerifyHello(ctx, st, p.hello(now.Add(time.Millisecond)), now, Options{MaxPresencesPerMesh: 3}); err != nil {
		t.Fatalf("mesh at 2 of 3: %v", err)
	}
}

func TestRevokedMemberAndArchivedMeshAreUnauthorized(t *testing.T) {
	t.Parallel()
	st, p := setup(t)
	ctx, now := context.Background(), time.Now()
	if _, err := admin.RevokeMember(ctx, st.Pool, p.meshID, p.member, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyHello(ctx, st, p.hello(now), now, Options{}); code(err) != protocol.CodeUnauthorized {
		t.Fatalf("revoked member: %v", err)
	}
	st2, p2 := setup(t)
	if _, err := st2.Pool.Exec(ctx, "UPDATE meshes SET archived_at = now() WHERE id = $1", p2.meshID); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyHello(ctx, st2, p2.hello(now), now, Options{}); code(err) != protocol.CodeUnauthorized {
		t.Fatalf("archived mesh: %v", err)
	}
}

// countingStore counts the database lookups verification makes.
type countingStore struct {
	Store
	lookups int
}

func (c *countingStore) Lookup(ctx context.Context, h *protocol.Hello, count bool) (Facts, error) {
	c.lookups++
	return c.Store.Lookup(ctx, h, count)
}

// Finding F: a hello that fails a check needing no database (timestamp, format, bounds,
// signature) is refused without a lookup — unless the mesh was just found full, when it is
// refused capacity (check 2 comes first), still without one.
func TestForgedHelloCostsNoQuery(t *testing.T) {
	t.Parallel()
	st, p := setup(t)
	ctx, now := context.Background(), time.Now()
	_, otherSec := newKey(t)
	forged := func() *protocol.Hello {
		h := p.hello(now)
		h.Signature = Sign(otherSec, CanonicalHello(h.MeshID, h.MemberID, h.Pubkey, h.Timestamp))
		return h
	}
	cs := &countingStore{Store: st}
	for _, mutate := range []func(h *protocol.Hello){
		func(h *protocol.Hello) {},                                    // bad signature
		func(h *protocol.Hello) { h.Timestamp -= 120_000 },            // skew
		func(h *protocol.Hello) { h.Pubkey = "zz" },                   // malformed
		func(h *protocol.Hello) { h.Cwd = strings.Repeat("/", 5000) }, // over a bound
	} {
		h := forged()
		mutate(h)
		if _, err := VerifyHello(ctx, cs, h, now, Options{MaxPresencesPerMesh: 100}); code(err) == "" {
			t.Fatal("a forged hello was accepted")
		}
	}
	if cs.lookups != 0 {
		t.Fatalf("forged hellos cost %d lookups, want 0", cs.lookups)
	}
	full := Options{MaxPresencesPerMesh: 100, KnownFull: func(mesh string) bool { return mesh == p.meshID }}
	if _, err := VerifyHello(ctx, cs, forged(), now, full); code(err) != protocol.CodeCapacity || cs.lookups != 0 {
		t.Fatalf("forged hello to a mesh known full: %q after %d lookups, want capacity after none", code(err), cs.lookups)
	}
	// A valid hello is looked up once.
	if _, err := VerifyHello(ctx, cs, p.hello(now), now, Options{MaxPresencesPerMesh: 100}); err != nil || cs.lookups != 1 {
		t.Fatalf("valid hello: %v after %d lookups", err, cs.lookups)
	}
}

// A replayed hello is refused before the member's hello budget is asked: replaying a
// captured hello cannot spend it.
func TestReplayDoesNotSpendTheMemberBudget(t *testing.T) {
	t.Parallel()
	st, p := setup(t)
	ctx, now := context.Background(), time.Now()
	asked := 0
	opt := Options{MemberHello: func(string) bool { asked++; return true }}
	h := p.hello(now)
	if _, err := VerifyHello(ctx, st, h, now, opt); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := VerifyHello(ctx, st, h, now, opt); code(err) != protocol.CodeReplayed {
			t.Fatalf("replay: %v", err)
		}
	}
	if asked != 1 {
		t.Fatalf("the budget was asked %d times, want once (for the fresh hello)", asked)
	}
}
