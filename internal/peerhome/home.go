// Package peerhome is meshpeer's state on the user's machine: the member identity (one
// ed25519 keypair, made by `meshpeer init`) and the meshes it joined, in one JSON file in
// the user's config directory (mode 0600, replaced atomically), beside each mesh's inbox
// (package inbox). The same key is the member key in every mesh it joins.
package peerhome

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshbroker/meshbroker/internal/client"
)

// EnvDir names the directory instead of the default (<user config dir>/meshpeer).
const EnvDir = "MESHPEER_HOME"

// Mesh is one joined mesh.
type Mesh struct {
	MeshID    string `json:"meshId"`
	MemberID  string `json:"memberId"`
	Slug      string `json:"slug,omitempty"`
	BrokerURL string `json:"brokerUrl"` // ws(s)://…/ws
	RootKey   string `json:"rootKey,omitempty"`
}

// Home is the state file's content and where it lives.
type Home struct {
	Dir         string `json:"-"`
	DisplayName string `json:"displayName"`
	Pubkey      string `json:"pubkey"`
	SecretKey   string `json:"secretKey"` // 128 hex: the 64-byte ed25519 secret key
	Meshes      []Mesh `json:"meshes"`
	// Logins are bearer tokens of broker accounts (device-code login), by broker HTTP base.
	Logins map[string]Login `json:"logins,omitempty"`
}

// Login is an account's bearer on one broker.
type Login struct {
	Token  string `json:"token"`
	UserID string `json:"userId"`
	Email  string `json:"email,omitempty"`
	Name   string `json:"name,omitempty"`
}

// SetLogin records a broker account's bearer and saves.
func (h *Home) SetLogin(base string, l Login) error {
	if h.Logins == nil {
		h.Logins = map[string]Login{}
	}
	h.Logins[base] = l
	return h.Save()
}

// ErrNoIdentity is returned by Load before `meshpeer init`.
var ErrNoIdentity = errors.New("no identity yet: run `meshpeer init` first")

// DefaultDir is $MESHPEER_HOME, else <user config dir>/meshpeer.
func DefaultDir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		return d, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no config directory (set %s): %w", EnvDir, err)
	}
	return filepath.Join(base, "meshpeer"), nil
}

func statePath(dir string) string { return filepath.Join(dir, "meshpeer.json") }

// Load reads the state in dir; ErrNoIdentity when there is none.
func Load(dir string) (*Home, error) {
	raw, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoIdentity
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", statePath(dir), err)
	}
	h := &Home{Dir: dir}
	if err := json.Unmarshal(raw, h); err != nil {
		return nil, fmt.Errorf("%s is not meshpeer state: %w", statePath(dir), err)
	}
	if _, err := h.secret(); err != nil {
		return nil, err
	}
	return h, nil
}

// Init creates the identity in dir with a fresh keypair, or returns the existing one
// (created false): an identity is never replaced.
func Init(dir, displayName string) (h *Home, created bool, err error) {
	if h, err := Load(dir); err == nil {
		return h, false, nil
	} else if !errors.Is(err, ErrNoIdentity) {
		return nil, false, err
	}
	pub, sec, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, err
	}
	h = &Home{Dir: dir, DisplayName: displayName, Pubkey: hex.EncodeToString(pub), SecretKey: hex.EncodeToString(sec), Meshes: []Mesh{}}
	if err := h.Save(); err != nil {
		return nil, false, err
	}
	return h, true, nil
}

// Save writes the state: to a temporary file (0600), synced, then renamed over the old one,
// so a crash leaves the old state or the new, never half of one.
func (h *Home) Save() error {
	if err := os.MkdirAll(h.Dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", h.Dir, err)
	}
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(statePath(h.Dir), append(b, '\n')); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// WriteFileAtomic replaces path with data (mode 0600) through a synced temporary file
// beside it, renamed over it: a crash leaves the old content or the new, never half.
func WriteFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".meshpeer-*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (h *Home) secret() (ed25519.PrivateKey, error) {
	sec, err := hex.DecodeString(h.SecretKey)
	if err != nil || len(sec) != ed25519.PrivateKeySize || hex.EncodeToString(sec[32:]) != strings.ToLower(h.Pubkey) {
		return nil, fmt.Errorf("%s: secretKey must be 128 hex characters matching pubkey", statePath(h.Dir))
	}
	return ed25519.PrivateKey(sec), nil
}

// Secret is the member's ed25519 secret key.
func (h *Home) Secret() ed25519.PrivateKey {
	sec, _ := h.secret() // checked by Load and Init
	return sec
}

// ErrMeshChanged refuses an invite that would point a joined mesh elsewhere.
var ErrMeshChanged = errors.New("already joined")

// AddMesh records a joined mesh and saves. Joining a mesh again (an idempotent re-join) is
// fine, but an invite is signed by a key it carries itself — anyone can make one naming a
// joined mesh's id — so one that would change where the mesh's broker is, its root key or
// its member, or reuse another mesh's slug, is refused unless force.
func (h *Home) AddMesh(m Mesh, force bool) error {
	for i := range h.Meshes {
		old := h.Meshes[i]
		if old.MeshID != m.MeshID && m.Slug != "" && old.Slug == m.Slug && !force {
			return fmt.Errorf("%w: another mesh (%s) is joined under the slug %q", ErrMeshChanged, old.MeshID, m.Slug)
		}
	}
	for i := range h.Meshes {
		if old := h.Meshes[i]; old.MeshID == m.MeshID {
			if !force && (old.BrokerURL != m.BrokerURL || old.RootKey != m.RootKey || old.MemberID != m.MemberID) {
				return fmt.Errorf("%w: mesh %s at %s as member %s; this invite says %s as member %s (join -force replaces it)",
					ErrMeshChanged, m.MeshID, old.BrokerURL, old.MemberID, m.BrokerURL, m.MemberID)
			}
			h.Meshes[i] = m
			return h.Save()
		}
	}
	h.Meshes = append(h.Meshes, m)
	return h.Save()
}

// Mesh picks a joined mesh by id or slug; with sel empty, the only one.
func (h *Home) Mesh(sel string) (Mesh, error) {
	if sel == "" {
		switch len(h.Meshes) {
		case 0:
			return Mesh{}, errors.New("no mesh joined yet: run `meshpeer join <invite>`")
		case 1:
			return h.Meshes[0], nil
		}
		names := make([]string, len(h.Meshes))
		for i, m := range h.Meshes {
			names[i] = m.label()
		}
		return Mesh{}, fmt.Errorf("joined %d meshes (%s): choose one with -mesh", len(h.Meshes), strings.Join(names, ", "))
	}
	for _, m := range h.Meshes {
		if m.MeshID == sel || (m.Slug != "" && m.Slug == sel) {
			return m, nil
		}
	}
	return Mesh{}, fmt.Errorf("no joined mesh %q (meshpeer whoami lists them)", sel)
}

func (m Mesh) label() string {
	if m.Slug != "" {
		return m.Slug
	}
	return m.MeshID
}

// Identity is what a socket to m authenticates as.
func (h *Home) Identity(m Mesh) client.Identity {
	return client.Identity{MeshID: m.MeshID, MemberID: m.MemberID, Pubkey: h.Pubkey, Secret: h.Secret()}
}
