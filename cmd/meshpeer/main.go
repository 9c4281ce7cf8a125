// Command meshpeer is a minimal claudemesh peer for trying a broker by hand: join a mesh
// with an invite, listen for messages, send one. Direct messages are end-to-end encrypted
// exactly as the claudemesh CLI does (crypto_box between ed25519 identities); the broker
// sees ciphertext.
//
//	meshpeer join -name alice -out alice.json 'ic://join/…'  # a fresh identity, enrolled
//	meshpeer listen -identity bob.json                        # prints each message as it arrives
//	meshpeer send -identity alice.json -to BOB_PUBKEY -text "hello"
//	meshpeer keygen alice.key                                 # a bare key, for `broker admin member add`
//	meshpeer listen -mesh M -member ID -key bob.key           # … and connecting with it
//
// -url defaults to the identity's broker, else ws://127.0.0.1:7900/ws.
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
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshbroker/meshbroker/internal/client"
	"github.com/meshbroker/meshbroker/internal/envelope"
)

const usage = `usage:
  meshpeer init   [-name NAME]              create this user's member key (in $MESHPEER_HOME,
                                            else <config dir>/meshpeer; mode 0600)
  meshpeer join   [-name NAME] [-url ws(s)://HOST/ws] LINK|TOKEN|CODE
                  enroll this user's key in a mesh with an invite (-url is needed for a code,
                  and overrides the invite's broker); several meshes may be joined
  meshpeer login  [-url ws(s)://HOST/ws]     log in to the broker's account (device code); keeps the bearer
  meshpeer meshes [-url …] [-json]          the logged-in account's meshes
  meshpeer whoami [-json]
  meshpeer peers  [-mesh SLUG|ID] [-json]
  meshpeer send   -to NAME|PUBKEY|@group|* -text TEXT [-priority now|next|low] [-mesh …] [-json]
  meshpeer inbox  [-wait 1s] [-all] [-keep] [-mesh …] [-json]
                  collect what arrived (stored on disk before it is acknowledged), print what
                  was not read yet, mark it read
  meshpeer mcp    [-mesh …]                 MCP server on stdio for Claude Code (claude mcp add meshpeer -- meshpeer mcp)
  meshpeer hooks install [-settings FILE] [-mesh …] [-rotate] [-allow-plain-http]
                  Claude Code hooks: status to the broker
                  (with this member's hook token), unread messages into the session;
                  FILE defaults to ~/.claude/settings.json
  meshpeer hooks uninstall                  remove exactly what install added
  meshpeer hook   …                         run by the installed hooks (hook body on stdin)
  every command above takes -home DIR (default as for init) and -url (overrides the broker)

  meshpeer join   -out FILE …              a fresh identity in FILE instead (for listen/send below)
  meshpeer listen -identity FILE [-url …]
  meshpeer send   -identity FILE -to PUBKEY|*|@group -text TEXT [-priority now|next|low] [-url …]
  meshpeer keygen FILE
  meshpeer listen|send -mesh MESH_ID -member MEMBER_ID -key FILE …   (instead of -identity)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "meshpeer:", err)
		var ue usageErr
		if errors.As(err, &ue) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageErr struct{ msg string }

func (e usageErr) Error() string { return e.msg }

type keyFile struct {
	Pubkey    string `json:"pubkey"`
	SecretKey string `json:"secretKey"` // 128 hex: libsodium's 64-byte ed25519 secret key
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr{"no command"}
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "keygen":
		if len(args) != 2 {
			return usageErr{"keygen needs exactly one FILE"}
		}
		pub, sec, _ := ed25519.GenerateKey(rand.Reader)
		b, _ := json.Marshal(keyFile{Pubkey: hex.EncodeToString(pub), SecretKey: hex.EncodeToString(sec)})
		if err := os.WriteFile(args[1], append(b, '\n'), 0o600); err != nil {
			return err
		}
		fmt.Fprintln(stdout, hex.EncodeToString(pub))
		return nil
	case "join":
		return join(ctx, args[1:], stdout, stderr)
	case "init":
		return cmdInit(args[1:], stdout)
	case "whoami":
		return cmdWhoami(args[1:], stdout)
	case "peers":
		return cmdPeers(ctx, args[1:], stdout, stderr)
	case "inbox":
		return cmdInbox(ctx, args[1:], stdout, stderr)
	case "login":
		return cmdLogin(ctx, args[1:], stdout, stderr)
	case "meshes":
		return cmdMeshes(ctx, args[1:], stdout)
	case "hooks":
		return cmdHooks(ctx, args[1:], stdout, stderr)
	case "hook":
		// Run by Claude Code on every prompt and stop: an exit status of 2 would block them,
		// so whatever goes wrong is said on stderr and the hook exits 0.
		if err := cmdHook(args[1:], os.Stdin, stdout); err != nil {
			fmt.Fprintln(stderr, "meshpeer hook:", err)
		}
		return nil
	case "mcp":
		return cmdMCP(ctx, args[1:], os.Stdin, nopCloser{stdout}, stderr)
	case "send":
		if !hasFlag(args[1:], "identity", "member", "key") {
			return cmdSend(ctx, args[1:], stdout, stderr)
		}
		// -identity FILE, or -mesh/-member/-key: the earlier form, below.
	case "listen":
	default:
		return usageErr{fmt.Sprintf("unknown command %q", args[0])}
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("url", "", "")
	identity := fs.String("identity", "", "")
	mesh := fs.String("mesh", "", "")
	member := fs.String("member", "", "")
	keyPath := fs.String("key", "", "")
	to := fs.String("to", "", "")
	text := fs.String("text", "", "")
	priority := fs.String("priority", "now", "")
	if err := fs.Parse(args[1:]); err != nil {
		return usageErr{err.Error()}
	}
	id, err := identityFromFlags(*identity, *mesh, *member, *keyPath, url)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "connecting to %s …\n", *url)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, *url, id, client.Options{SessionID: fmt.Sprintf("meshpeer-%d-%x", os.Getpid(), randBytes(4)), Pid: os.Getpid(), Cwd: cwd()})
	if err != nil {
		return err
	}
	defer c.Close()

	if args[0] == "send" {
		if *to == "" || *text == "" {
			return usageErr{"send needs -to and -text"}
		}
		var nonce, ct string
		if strings.HasPrefix(*to, "@") || *to == "*" {
			// Like the claudemesh CLI v0.1: multicast is not encrypted per recipient; the
			// ciphertext field carries base64 text (and the nonce is a random placeholder).
			n := make([]byte, 24)
			_, _ = rand.Read(n)
			nonce, ct = base64.StdEncoding.EncodeToString(n), base64.StdEncoding.EncodeToString([]byte(*text))
		} else if nonce, ct, err = envelope.Seal([]byte(*text), *to, id.Secret); err != nil {
			return err
		}
		ack, err := c.Send(ctx, client.Message{Target: *to, Priority: *priority, Nonce: nonce, Ciphertext: ct})
		if err != nil {
			return err
		}
		if ack["queued"] != true {
			return fmt.Errorf("refused: %s", ack.Str("error"))
		}
		fmt.Fprintf(stdout, "sent %s\n", ack.Str("messageId"))
		return nil
	}

	fmt.Fprintf(stdout, "connected as %s (presence %s); waiting for messages, Ctrl-C to stop\n", c.Ack.Str("memberDisplayName"), c.Ack.Str("presenceId"))
	for {
		select {
		case <-ctx.Done():
			return nil
		case f, ok := <-c.Frames:
			if !ok {
				return fmt.Errorf("connection closed: %v", c.Err())
			}
			if f.Type() != "push" {
				continue
			}
			if f.Str("subtype") == "system" {
				data, _ := json.Marshal(f["eventData"])
				fmt.Fprintf(stdout, "[system] %s %s\n", f.Str("event"), data)
				continue
			}
			pt, err := envelope.Open(f.Str("nonce"), f.Str("ciphertext"), f.Str("senderPubkey"), id.Secret)
			if err != nil {
				if plain, derr := base64.StdEncoding.DecodeString(f.Str("ciphertext")); derr == nil {
					pt = append([]byte("(multicast, not encrypted) "), plain...)
				} else {
					pt = []byte("(does not decrypt: " + err.Error() + ")")
				}
			}
			fmt.Fprintf(stdout, "[%s] from %s…: %s\n", f.Str("priority"), f.Str("senderPubkey")[:12], pt)
		}
	}
}

// identityFromFlags is the identity to connect as: a file join wrote (-identity), or a
// mesh, member and key given one by one. url is filled from the identity when not given.
func identityFromFlags(identity, mesh, member, keyPath string, url *string) (client.Identity, error) {
	if identity != "" {
		if mesh != "" || member != "" || keyPath != "" {
			return client.Identity{}, usageErr{"-identity replaces -mesh, -member and -key: give one or the other"}
		}
		f, id, err := loadIdentity(identity)
		if err != nil {
			return client.Identity{}, err
		}
		if *url == "" {
			*url = f.BrokerURL
		}
		return id, nil
	}
	if *url == "" {
		*url = "ws://127.0.0.1:7900/ws"
	}
	if mesh == "" || member == "" || keyPath == "" {
		return client.Identity{}, usageErr{"-identity FILE, or -mesh, -member and -key, are required"}
	}
	raw, err := os.ReadFile(keyPath)
	if err != nil {
		return client.Identity{}, err
	}
	var kf keyFile
	if err := json.Unmarshal(raw, &kf); err != nil {
		return client.Identity{}, fmt.Errorf("%s is not a meshpeer key file: %w", keyPath, err)
	}
	sec, err := hex.DecodeString(kf.SecretKey)
	if err != nil || len(sec) != ed25519.PrivateKeySize {
		return client.Identity{}, fmt.Errorf("%s: secretKey must be 128 hex characters", keyPath)
	}
	return client.Identity{MeshID: mesh, MemberID: member, Pubkey: kf.Pubkey, Secret: ed25519.PrivateKey(sec)}, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// hasFlag reports whether args use any of the flags (-name or --name, with or without =).
func hasFlag(args []string, names ...string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimLeft(a, "-")
		a, _, _ = strings.Cut(a, "=")
		for _, n := range names {
			if a == n {
				return true
			}
		}
	}
	return false
}

func cwd() string {
	d, _ := os.Getwd()
	return d
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
