// Command meshpeer is a minimal claudemesh peer for trying a broker by hand: make a key,
// listen for messages, send one. Direct messages are end-to-end encrypted exactly as the
// claudemesh CLI does (crypto_box between ed25519 identities); the broker sees ciphertext.
//
//	meshpeer keygen alice.key                       # writes the key, prints its public key
//	meshpeer listen -mesh M -member ID -key bob.key # prints each message as it arrives
//	meshpeer send -mesh M -member ID -key alice.key -to BOB_PUBKEY -text "hello"
//
// -url defaults to ws://127.0.0.1:7900/ws.
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
  meshpeer keygen FILE
  meshpeer listen -mesh MESH_ID -member MEMBER_ID -key FILE [-url ws://127.0.0.1:7900/ws]
  meshpeer send   -mesh MESH_ID -member MEMBER_ID -key FILE -to PUBKEY|*|@group -text TEXT [-priority now|next|low] [-url …]
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
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

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageErr{"no command"}
	}
	switch args[0] {
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
	case "listen", "send":
	default:
		return usageErr{fmt.Sprintf("unknown command %q", args[0])}
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("url", "ws://127.0.0.1:7900/ws", "")
	mesh := fs.String("mesh", "", "")
	member := fs.String("member", "", "")
	keyPath := fs.String("key", "", "")
	to := fs.String("to", "", "")
	text := fs.String("text", "", "")
	priority := fs.String("priority", "now", "")
	if err := fs.Parse(args[1:]); err != nil {
		return usageErr{err.Error()}
	}
	if *mesh == "" || *member == "" || *keyPath == "" {
		return usageErr{"-mesh, -member and -key are required"}
	}
	raw, err := os.ReadFile(*keyPath)
	if err != nil {
		return err
	}
	var kf keyFile
	if err := json.Unmarshal(raw, &kf); err != nil {
		return fmt.Errorf("%s is not a meshpeer key file: %w", *keyPath, err)
	}
	sec, err2 := hex.DecodeString(kf.SecretKey)
	if err2 != nil || len(sec) != ed25519.PrivateKeySize {
		return fmt.Errorf("%s: secretKey must be 128 hex characters", *keyPath)
	}
	id := client.Identity{MeshID: *mesh, MemberID: *member, Pubkey: kf.Pubkey, Secret: ed25519.PrivateKey(sec)}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, *url, id, client.Options{SessionID: fmt.Sprintf("meshpeer-%d", os.Getpid()), Pid: os.Getpid(), Cwd: cwd()})
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

func cwd() string {
	d, _ := os.Getwd()
	return d
}
