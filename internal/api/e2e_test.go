package api_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/api"
	"github.com/meshbroker/meshbroker/internal/audit"
	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/envelope"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/invite"
)

// TestClaudemeshCLIFlowsEndToEnd runs the claudemesh CLI's flows as the reference describes
// its requests, against two broker instances on one database: a user logs in with a device
// code that the web app approves, creates a mesh, creates an invite; a second identity —
// another person, logged in too — joins with the invite; both connect over /ws (one per
// instance) and exchange an end-to-end encrypted message both ways.
func TestClaudemeshCLIFlowsEndToEnd(t *testing.T) {
	e := newEnv(t, map[string]string{"BROKER_URL": "wss://broker.example.com/ws", "APP_URL": "https://app.example.com"})
	second := e.second()

	// login: POST /cli/device-code, poll, the web app approves, poll collects the bearer.
	login := func(userID, email, name string) string {
		t.Helper()
		start := e.call("POST", "/cli/device-code", "", map[string]any{"hostname": name + "-laptop", "platform": "linux", "arch": "amd64"})
		expect(t, start, http.StatusOK, "")
		poll := "/cli/device-code/" + str(start, "device_code")
		if r := e.call("GET", poll, "", nil); r.Body["status"] != "pending" {
			t.Fatalf("first poll: %s", r.Raw)
		}
		expect(t, e.call("POST", "/cli/device-code/"+str(start, "session_id")+"/approve", appSecret,
			map[string]any{"user_id": userID, "email": email, "name": name}), http.StatusOK, "")
		r := callAt(t, second.HTTP, "GET", poll, "", nil) // the CLI may poll any instance
		if r.Body["status"] != "approved" || str(r, "session_token") == "" {
			t.Fatalf("poll after approval: %s", r.Raw)
		}
		if u, _ := r.Body["user"].(map[string]any); u["id"] != userID || u["display_name"] != name {
			t.Fatalf("polled user: %s", r.Raw)
		}
		if again := e.call("GET", poll, "", nil); again.Body["session_token"] != nil {
			t.Fatalf("bearer collected twice: %s", again.Raw)
		}
		return str(r, "session_token")
	}
	aliceToken := login("user-alice", "alice@example.com", "Alice")

	// mesh create: the CLI generates the member key and sends its public half.
	alicePub, aliceSec := client.NewKey()
	created := e.call("POST", "/cli/mesh/create", aliceToken, map[string]any{"name": "Platform Team", "pubkey": alicePub})
	expect(t, created, http.StatusOK, "")
	meshID, slug := str(created, "id"), str(created, "slug")
	alice := client.Identity{MeshID: meshID, MemberID: str(created, "member_id"), Pubkey: alicePub, Secret: aliceSec}

	// invite: the owner asks for one; the CLI shares the ic://join link.
	inv := e.call("POST", "/cli/mesh/"+slug+"/invite", aliceToken, map[string]any{"role": "member"})
	expect(t, inv, http.StatusOK, "")
	if str(inv, "url") != "https://app.example.com/i/"+str(inv, "code") {
		t.Fatalf("invite url: %s", inv.Raw)
	}
	link := str(inv, "join_url")
	if link == "" {
		link = invite.Link(str(inv, "token"))
	}

	// join: the second person's CLI decodes the link, checks the owner's signature, and
	// posts the token, the payload and its fresh key (with its own bearer and the key's
	// signature of the link proof: the member is then linked to its account).
	bobToken := login("user-bob", "bob@example.com", "Bob")
	payload, err := invite.DecodeToken(link)
	if err != nil {
		t.Fatal(err)
	}
	if err := payload.Verify(); err != nil || payload.BrokerURL != "wss://broker.example.com/ws" || payload.MeshID != meshID {
		t.Fatalf("invite payload %+v: %v", payload, err)
	}
	bobPub, bobSec := client.NewKey()
	linkSig := hex.EncodeToString(ed25519.Sign(bobSec, api.LinkProofMessage(meshID, "user-bob", bobPub)))
	joined := callAt(t, second.HTTP, "POST", "/join", bobToken, map[string]any{"invite_token": invite.TokenFromLink(link),
		"invite_payload": payload, "peer_pubkey": bobPub, "display_name": "bob", "link_sig": linkSig})
	expect(t, joined, http.StatusOK, "")
	bob := client.Identity{MeshID: meshID, MemberID: str(joined, "memberId"), Pubkey: bobPub, Secret: bobSec}

	// Both accounts now list the mesh, with bob as a plain member.
	if r := e.call("GET", "/cli/meshes", bobToken, nil); len(r.Body["meshes"].([]any)) != 1 ||
		r.Body["meshes"].([]any)[0].(map[string]any)["role"] != "member" {
		t.Fatalf("bob's meshes: %s", r.Raw)
	}

	// connect: one peer per instance; they see each other and talk, encrypted end to end.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	a, err := client.Dial(ctx, e.inst.WS, alice, client.Options{SessionID: ids.New(), Cwd: "/work/platform"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := client.Dial(ctx, second.WS, bob, client.Options{SessionID: ids.New(), Cwd: "/work/platform"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	exchange := func(from *client.Client, fromID client.Identity, to *client.Client, toID client.Identity, text string) {
		t.Helper()
		nonce, ct, err := envelope.Seal([]byte(text), toID.Pubkey, fromID.Secret)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := from.Send(ctx, client.Message{Target: toID.Pubkey, Priority: "now", Nonce: nonce, Ciphertext: ct})
		if err != nil || ack["queued"] != true {
			t.Fatalf("send: %v %v", ack, err)
		}
		push, err := to.NextMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := envelope.Open(push.Str("nonce"), push.Str("ciphertext"), push.Str("senderPubkey"), toID.Secret)
		if err != nil || string(plain) != text || push.Str("messageId") != ack.Str("messageId") {
			t.Fatalf("received %q (%v), push %v", plain, err, push)
		}
	}
	exchange(a, alice, b, bob, "hello bob, welcome to the platform mesh")
	exchange(b, bob, a, alice, "thanks alice")

	// The mesh's audit chain holds the account events, and verifies.
	var events []string
	rows, err := e.d.Pool.Query(ctx, `SELECT event_type FROM audit_log WHERE mesh_id = $1 AND event_type IN ('member_joined', 'invite_created') ORDER BY id`, meshID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ev string
		_ = rows.Scan(&ev)
		events = append(events, ev)
	}
	rows.Close()
	if len(events) != 3 || events[0] != "member_joined" || events[1] != "invite_created" || events[2] != "member_joined" {
		t.Fatalf("audit events %v", events)
	}
	v, err := audit.VerifyMesh(ctx, e.q, meshID)
	if err != nil || !v.Valid {
		t.Fatalf("audit chain: %+v %v", v, err)
	}
}

// A join that carries a bearer links the new member to that account only with the member
// key's signature of the link proof: an invite holder cannot make a member of someone
// else's public key and then manage it as its own.
func TestJoinLinksOnlyWithProofOfTheKey(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("links")
	inv := e.call("POST", "/cli/mesh/"+o.slug+"/invite", o.ownerToken, map[string]any{})
	tok := str(inv, "token")
	p, err := invite.DecodeToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	malloryID, malloryToken := e.user("mallory@example.com")
	victimPub, victimSec := client.NewKey()
	_, mallorySec := client.NewKey()
	body := func(sig string) map[string]any {
		b := map[string]any{"invite_token": tok, "invite_payload": p, "peer_pubkey": victimPub, "display_name": "victim"}
		if sig != "" {
			b["link_sig"] = sig
		}
		return b
	}
	expect(t, e.call("POST", "/join", malloryToken, body("")), http.StatusBadRequest, "link_proof_required")
	forged := hex.EncodeToString(ed25519.Sign(mallorySec, api.LinkProofMessage(o.meshID, malloryID, victimPub)))
	expect(t, e.call("POST", "/join", malloryToken, body(forged)), http.StatusBadRequest, "link_proof_required")
	// A proof the victim made for its own account does not link it to mallory's.
	victimID, victimToken := e.user("victim@example.com")
	theirs := hex.EncodeToString(ed25519.Sign(victimSec, api.LinkProofMessage(o.meshID, victimID, victimPub)))
	expect(t, e.call("POST", "/join", malloryToken, body(theirs)), http.StatusBadRequest, "link_proof_required")
	if n := e.count(`SELECT used_count FROM invites WHERE code = $1`, str(inv, "code")); n != 0 {
		t.Fatalf("refused links consumed %d uses", n)
	}
	r := e.call("POST", "/join", victimToken, body(theirs))
	expect(t, r, http.StatusOK, "")
	if n := e.count(`SELECT count(*) FROM members WHERE id = $1 AND user_id = $2`, r.Body["memberId"], victimID); n != 1 {
		t.Fatal("the proven join was not linked to its account")
	}
}

// The owner lists its mesh's invites (without tokens) and revokes a leaked one, by code: a
// join with it is refused from then on, and the revocation is audited.
func TestOwnerListsAndRevokesInvites(t *testing.T) {
	e := newEnv(t, nil)
	o := e.createMesh("leaky")
	_, memberToken := e.member(o.meshID, "bob", "member")
	inv := e.call("POST", "/cli/mesh/"+o.slug+"/invite", o.ownerToken, map[string]any{})
	expect(t, inv, http.StatusOK, "")
	list := e.call("GET", "/cli/mesh/"+o.slug+"/invites", o.ownerToken, nil)
	expect(t, list, http.StatusOK, "")
	if strings.Contains(list.Raw, str(inv, "token")) || len(list.Body["invites"].([]any)) != 1 {
		t.Fatalf("listing: %s", list.Raw)
	}
	expect(t, e.call("GET", "/cli/mesh/"+o.slug+"/invites", memberToken, nil), http.StatusForbidden, "Only the owner can manage invites")
	path := "/cli/mesh/" + o.slug + "/invite/" + strings.ToLower(str(inv, "code"))
	expect(t, e.call("DELETE", path, memberToken, nil), http.StatusForbidden, "Only the owner can manage invites")
	expect(t, e.call("DELETE", path, o.ownerToken, nil), http.StatusOK, "")
	expect(t, e.call("DELETE", path, o.ownerToken, nil), http.StatusNotFound, "Invite not found")
	p, err := invite.DecodeToken(str(inv, "token"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := client.NewKey()
	expect(t, e.call("POST", "/join", "", map[string]any{"invite_token": str(inv, "token"), "invite_payload": p,
		"peer_pubkey": pub, "display_name": "late"}), http.StatusBadRequest, "invite_revoked")
	if n := e.count(`SELECT count(*) FROM audit_log WHERE mesh_id = $1 AND event_type = 'invite_revoked'`, o.meshID); n != 1 {
		t.Fatalf("%d invite_revoked events", n)
	}
}
