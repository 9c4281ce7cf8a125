package peerhome

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The identity is made once (0600) and kept; a joined mesh cannot be pointed elsewhere by a
// later invite without force (invites are signed by a key they carry themselves).
func TestHomeKeepsItsIdentityAndRefusesARepointedMesh(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	h, created, err := Init(dir, "ann")
	if err != nil || !created {
		t.Fatalf("init: %v %v", created, err)
	}
	if st, err := os.Stat(statePath(dir)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", st, err)
	}
	again, created, err := Init(dir, "other")
	if err != nil || created || again.Pubkey != h.Pubkey || again.DisplayName != "ann" {
		t.Fatalf("second init replaced the identity: %+v %v %v", again, created, err)
	}
	m := Mesh{MeshID: "m1", MemberID: "mem1", Slug: "team", BrokerURL: "wss://a.example/ws", RootKey: "rk"}
	if err := h.AddMesh(m, false); err != nil {
		t.Fatal(err)
	}
	if err := h.AddMesh(m, false); err != nil {
		t.Fatalf("a re-join was refused: %v", err)
	}
	evil := m
	evil.BrokerURL = "wss://evil.example/ws"
	if err := h.AddMesh(evil, false); !errors.Is(err, ErrMeshChanged) {
		t.Fatalf("a repointed mesh: %v", err)
	}
	squat := Mesh{MeshID: "m2", MemberID: "x", Slug: "team", BrokerURL: "wss://evil.example/ws"}
	if err := h.AddMesh(squat, false); !errors.Is(err, ErrMeshChanged) {
		t.Fatalf("a second mesh under a joined slug: %v", err)
	}
	loaded, err := Load(dir)
	if err != nil || len(loaded.Meshes) != 1 || loaded.Meshes[0].BrokerURL != m.BrokerURL {
		t.Fatalf("after the refusals: %+v %v", loaded, err)
	}
	if got, err := loaded.Mesh("team"); err != nil || got.MeshID != "m1" {
		t.Fatalf("mesh by slug: %+v %v", got, err)
	}
	if err := h.AddMesh(evil, true); err != nil {
		t.Fatalf("forced: %v", err)
	}
}
