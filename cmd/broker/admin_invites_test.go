package main_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestAdminInviteCreate(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	env := baseEnv("DATABASE_URL="+d.URL, "APP_URL=https://app.example", "BROKER_URL=wss://broker.example/ws")
	code, out, errOut := run(t, env, "admin", "mesh", "create", "--name", "Invitees")
	if code != 0 {
		t.Fatalf("mesh create: %d %s", code, errOut)
	}
	var mesh struct{ MeshID string }
	if err := json.Unmarshal([]byte(out), &mesh); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	code, out, errOut = run(t, env, "admin", "invite", "create", "--mesh", mesh.MeshID, "--role", "admin", "--max-uses", "3", "--expires-in", "2d")
	if code != 0 {
		t.Fatalf("invite create: %d %s", code, errOut)
	}
	var inv struct {
		InviteID, Token, Code, URL, Link, ExpiresAt, Role string
		MaxUses                                           int
	}
	if err := json.Unmarshal([]byte(out), &inv); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("stdout is not one JSON line: %q", out)
	}
	exp, err := time.Parse(time.RFC3339, inv.ExpiresAt)
	if err != nil || exp.Before(start.Add(48*time.Hour-time.Second)) || exp.After(time.Now().Add(48*time.Hour)) {
		t.Fatalf("expiresAt %q (%v)", inv.ExpiresAt, err)
	}
	if len(inv.InviteID) != 32 || len(inv.Code) != 8 || inv.URL != "https://app.example/i/"+inv.Code ||
		inv.Link != "ic://join/"+inv.Token || inv.MaxUses != 3 || inv.Role != "admin" {
		t.Fatalf("output %s", out)
	}
	p, err := invite.DecodeToken(inv.Link)
	if err != nil || p.Verify() != nil || p.MeshID != mesh.MeshID || p.Role != "admin" || p.BrokerURL != "wss://broker.example/ws" {
		t.Fatalf("token %+v: %v", p, err)
	}
	var maxUses int
	var createdBy *string
	if err := d.Pool.QueryRow(context.Background(), `SELECT max_uses, created_by FROM invites WHERE id = $1 AND token = $2`, inv.InviteID, inv.Token).
		Scan(&maxUses, &createdBy); err != nil || maxUses != 3 || createdBy != nil {
		t.Fatalf("row: max_uses %d created_by %v (%v)", maxUses, createdBy, err)
	}
	var events int
	if err := d.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE mesh_id = $1 AND event_type = 'invite_created'`, mesh.MeshID).
		Scan(&events); err != nil || events != 1 {
		t.Fatalf("%d invite_created events (%v)", events, err)
	}

	// The defaults: one use, member, seven days.
	code, out, errOut = run(t, env, "admin", "invite", "create", "--mesh", mesh.MeshID)
	if code != 0 || !strings.Contains(out, `"maxUses":1,"role":"member"`) {
		t.Fatalf("defaults: %d %s %s", code, out, errOut)
	}

	if _, err := d.Pool.Exec(context.Background(), `INSERT INTO meshes (id, name, slug, archived_at) VALUES ('gone', 'gone', 'gone', now())`); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--mesh", mesh.MeshID, "--role", "owner"}, `--role must be member or admin, not "owner"`},
		{[]string{"--mesh", mesh.MeshID, "--max-uses", "0"}, "--max-uses must be a whole number from 1 to 1000000"},
		{[]string{"--mesh", mesh.MeshID, "--max-uses", "lots"}, "--max-uses must be a whole number"},
		{[]string{"--mesh", mesh.MeshID, "--expires-in", "soon"}, `--expires-in: "soon" is neither days`},
		{[]string{"--mesh", mesh.MeshID, "--expires-in", "400d"}, "up to 365d"},
		{[]string{"--mesh", mesh.MeshID, "--expires-in", "-1h"}, "not between 1s and 365d"},
		{[]string{"--mesh", "nope"}, `no mesh with id "nope"`},
		{[]string{"--mesh", "gone"}, `mesh "gone" is archived`},
		{[]string{"--role", "admin"}, "missing required flag: --mesh"},
	}
	for _, b := range bad {
		code, out, errOut := run(t, env, append([]string{"admin", "invite", "create"}, b.args...)...)
		if code != 2 || out != "" || !strings.Contains(errOut, b.want) {
			t.Errorf("admin invite create %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", b.args, code, out, errOut, b.want)
		}
	}
	var n int
	if err := d.Pool.QueryRow(context.Background(), `SELECT count(*) FROM invites`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d invites after two good and %d bad commands", n, len(bad))
	}
}

// An operator lists a mesh's invites (never their tokens) and revokes one by its code.
func TestAdminInviteListAndRevoke(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	env := baseEnv("DATABASE_URL=" + d.URL)
	_, out, _ := run(t, env, "admin", "mesh", "create", "--name", "Listed")
	var mesh struct{ MeshID string }
	if err := json.Unmarshal([]byte(out), &mesh); err != nil {
		t.Fatal(err)
	}
	_, out, _ = run(t, env, "admin", "invite", "create", "--mesh", mesh.MeshID)
	var inv struct{ InviteID, Token, Code string }
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, env, "admin", "invite", "list", "--mesh", mesh.MeshID)
	if code != 0 || !strings.Contains(out, inv.InviteID) || strings.Contains(out, inv.Token) {
		t.Fatalf("list: %d %s %s", code, out, errOut)
	}
	code, out, errOut = run(t, env, "admin", "invite", "revoke", "--mesh", mesh.MeshID, inv.Code)
	if code != 0 || !strings.Contains(out, `"revoked":true`) {
		t.Fatalf("revoke: %d %s %s", code, out, errOut)
	}
	code, _, errOut = run(t, env, "admin", "invite", "revoke", "--mesh", mesh.MeshID, inv.Code)
	if code != 2 || !strings.Contains(errOut, "no unrevoked invite") {
		t.Fatalf("second revoke: %d %s", code, errOut)
	}
	_, out, _ = run(t, env, "admin", "invite", "list", "--mesh", mesh.MeshID)
	if !strings.Contains(out, `"revokedAt":"`) {
		t.Fatalf("listing after revoke: %s", out)
	}
}
