package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/invite"
	"github.com/meshbroker/meshbroker/internal/peerhome"
)

// identityFile is what join stores: everything listen and send need to connect.
type identityFile struct {
	MeshID      string `json:"meshId"`
	MemberID    string `json:"memberId"`
	Slug        string `json:"slug,omitempty"`
	DisplayName string `json:"displayName"`
	Pubkey      string `json:"pubkey"`
	SecretKey   string `json:"secretKey"` // 128 hex: the 64-byte ed25519 secret key
	BrokerURL   string `json:"brokerUrl"` // ws(s)://…/ws
	RootKey     string `json:"rootKey,omitempty"`
}

// codeShape is a v2 invite code, alone or at the end of an /i/<code> link.
var codeShape = regexp.MustCompile(`(?i)(?:^|/i/)([` + invite.CodeAlphabet + `]{8})/?$`)

// join enrolls the user's member key (peerhome: made on first use, as by init) in a mesh
// with an invite — a v1 token or its ic://join/<token> link through POST /join, or a v2
// code through POST /invites/<code>/claim — and records the mesh in the home; with -out, a
// fresh ed25519 identity instead, written to that file (mode 0600, never over an existing
// file).
func join(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("join", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	wsURL := fs.String("url", "", "")
	name := fs.String("name", "", "")
	out := fs.String("out", "", "")
	defHome, _ := peerhome.DefaultDir()
	homeDir := fs.String("home", defHome, "")
	force := fs.Bool("force", false, "")
	if err := fs.Parse(args); err != nil {
		return usageErr{err.Error()}
	}
	if fs.NArg() != 1 {
		return usageErr{"join needs exactly one invite: an ic://join/… link, a token or a code"}
	}
	arg := strings.TrimSpace(fs.Arg(0))
	var id identityFile
	var home *peerhome.Home
	if *out == "" {
		h, created, err := peerhome.Init(*homeDir, nonEmpty(*name, defaultName()))
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(stderr, "identity created in %s (%s)\n", h.Dir, h.Pubkey)
		}
		home = h
		id = identityFile{DisplayName: nonEmpty(*name, h.DisplayName), Pubkey: h.Pubkey, SecretKey: h.SecretKey}
	} else {
		pub, sec, _ := ed25519.GenerateKey(rand.Reader)
		id = identityFile{DisplayName: nonEmpty(*name, defaultName()), Pubkey: hex.EncodeToString(pub), SecretKey: hex.EncodeToString(sec)}
	}

	// Where the identity goes is settled before the broker is asked: a use of the invite
	// must not be spent on an identity that cannot be written.
	checkOut := func() error {
		if *out == "" {
			return nil // the home, written at the end
		}
		if _, err := os.Stat(*out); err == nil {
			return fmt.Errorf("%s exists: choose another -out", *out)
		}
		return nil
	}
	if m := codeShape.FindStringSubmatch(arg); m != nil && !strings.Contains(arg, "join/") {
		code := strings.ToUpper(m[1])
		if *wsURL == "" {
			return usageErr{"a v2 code carries no broker address: give -url ws(s)://…/ws"}
		}
		if err := checkOut(); err != nil {
			return err
		}
		if err := claimCode(ctx, stderr, code, *wsURL, &id); err != nil {
			return err
		}
	} else {
		p, err := invite.DecodeToken(arg)
		if err != nil {
			return fmt.Errorf("not an invite link, token or code: %w", err)
		}
		if err := p.Verify(); err != nil {
			return fmt.Errorf("the invite's signature does not verify (altered or truncated?): %w", err)
		}
		if time.Unix(p.ExpiresAt, 0).Before(time.Now()) {
			return fmt.Errorf("the invite expired at %s", time.Unix(p.ExpiresAt, 0).UTC().Format(time.RFC3339))
		}
		if err := checkOut(); err != nil {
			return err
		}
		id.BrokerURL = p.BrokerURL
		if *wsURL != "" {
			id.BrokerURL = *wsURL
		}
		if home != nil && !*force {
			for _, m := range home.Meshes {
				if m.MeshID == p.MeshID && (m.BrokerURL != id.BrokerURL || m.RootKey != p.MeshRootKey) {
					return fmt.Errorf("mesh %s is joined at %s; this invite points at %s with another root key or broker (join -force to replace it)", p.MeshID, m.BrokerURL, id.BrokerURL)
				}
			}
		}
		id.MeshID, id.Slug, id.RootKey = p.MeshID, p.MeshSlug, p.MeshRootKey
		var res struct {
			OK       bool   `json:"ok"`
			MemberID string `json:"memberId"`
			Error    string `json:"error"`
		}
		body := map[string]any{"invite_token": strings.TrimRight(invite.TokenFromLink(arg), "="), "invite_payload": p,
			"peer_pubkey": id.Pubkey, "display_name": id.DisplayName}
		if err := post(ctx, stderr, id.BrokerURL, "/join", body, &res); err != nil {
			return err
		}
		id.MemberID = res.MemberID
	}
	if home != nil {
		if err := home.AddMesh(peerhome.Mesh{MeshID: id.MeshID, MemberID: id.MemberID, Slug: id.Slug, BrokerURL: id.BrokerURL, RootKey: id.RootKey}, *force); err != nil {
			return fmt.Errorf("joined mesh %s as member %s, but the home could not be saved: %w", nonEmpty(id.Slug, id.MeshID), id.MemberID, err)
		}
		fmt.Fprintf(stdout, "joined mesh %s as %s (member %s); recorded in %s\n", nonEmpty(id.Slug, id.MeshID), id.DisplayName, id.MemberID, home.Dir)
		return nil
	}
	b, _ := json.MarshalIndent(id, "", "  ")
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		// Created meanwhile: print the identity rather than lose the admitted member.
		return fmt.Errorf("%s appeared while joining; the new identity (member %s) is:\n%s", *out, id.MemberID, b)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "joined mesh %s as %s (member %s); identity written to %s\n", nonEmpty(id.Slug, id.MeshID), id.DisplayName, id.MemberID, *out)
	return nil
}

// claimCode claims a v2 code: the root key comes back sealed to a fresh x25519 key.
func claimCode(ctx context.Context, stderr io.Writer, code, wsURL string, id *identityFile) error {
	xpub, xsec, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	var res struct {
		SealedRootKey string `json:"sealed_root_key"`
		MeshID        string `json:"mesh_id"`
		MemberID      string `json:"member_id"`
		Error         string `json:"error"`
	}
	body := map[string]any{"recipient_x25519_pubkey": base64.RawURLEncoding.EncodeToString(xpub[:]),
		"peer_pubkey": id.Pubkey, "display_name": id.DisplayName}
	if err := post(ctx, stderr, wsURL, "/invites/"+code+"/claim", body, &res); err != nil {
		return err
	}
	sealed, err := base64.RawURLEncoding.DecodeString(res.SealedRootKey)
	if err != nil {
		return fmt.Errorf("the broker's sealed root key is not base64url: %w", err)
	}
	root, ok := box.OpenAnonymous(nil, sealed, xpub, xsec)
	if !ok {
		return errors.New("the broker's sealed root key does not open with our key")
	}
	id.MeshID, id.MemberID, id.BrokerURL, id.RootKey = res.MeshID, res.MemberID, wsURL, base64.RawURLEncoding.EncodeToString(root)
	return nil
}

// post sends a JSON request to the broker's HTTP side (the ws URL's host) and decodes its
// answer; a refusal comes back as the broker's error string.
func post(ctx context.Context, stderr io.Writer, wsURL, path string, body, into any) error {
	base, err := httpBase(wsURL)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "joining through %s%s …\n", base, path)
	err = httpJSON(ctx, http.MethodPost, base+path, "", body, into)
	var refused *brokerRefusal
	if errors.As(err, &refused) && refused.reason != "" {
		return fmt.Errorf("the broker refused the invite: %w", err)
	}
	return err
}

// httpBase turns a ws(s)://host/ws URL into http(s)://host.
func httpBase(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("broker URL %q is not ws(s)://host/ws", wsURL)
	}
	switch u.Scheme {
	case "ws", "http":
		u.Scheme = "http"
	case "wss", "https":
		u.Scheme = "https"
	default:
		return "", fmt.Errorf("broker URL %q is not ws(s)://host/ws", wsURL)
	}
	return u.Scheme + "://" + u.Host, nil
}

// loadIdentity reads a file join wrote.
func loadIdentity(path string) (identityFile, client.Identity, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return identityFile{}, client.Identity{}, err
	}
	var f identityFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return identityFile{}, client.Identity{}, fmt.Errorf("%s is not a meshpeer identity file: %w", path, err)
	}
	sec, err := hex.DecodeString(f.SecretKey)
	if err != nil || len(sec) != ed25519.PrivateKeySize || f.MeshID == "" || f.MemberID == "" {
		return identityFile{}, client.Identity{}, fmt.Errorf("%s: not a complete identity (meshId, memberId, 128-hex secretKey)", path)
	}
	return f, client.Identity{MeshID: f.MeshID, MemberID: f.MemberID, Pubkey: f.Pubkey, Secret: ed25519.PrivateKey(sec)}, nil
}

func defaultName() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	h, _ := os.Hostname()
	return nonEmpty(h, "meshpeer")
}

func nonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
