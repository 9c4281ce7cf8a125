package main

// meshpeer login: the broker's device-code login (docs/http-api.md): start a code, show
// where to approve it, poll until it is approved, keep the bearer in the home.
// meshpeer meshes: the meshes of the logged-in account (GET /cli/meshes), proving the bearer.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/meshbroker/meshbroker/internal/peerhome"
)

// loginPoll is how often the approval is polled (a test shortens it).
var loginPoll = 2 * time.Second

func cmdLogin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	fs := newFlags("login", &c)
	if err := fs.Parse(args); err != nil {
		return usageErr{err.Error()}
	}
	h, _, err := peerhome.Init(c.home, defaultName())
	if err != nil {
		return err
	}
	broker := c.url
	if broker == "" && len(h.Meshes) > 0 {
		m, err := h.Mesh(c.mesh)
		if err != nil {
			return err
		}
		broker = m.BrokerURL
	}
	if broker == "" {
		return usageErr{"login needs -url ws(s)://HOST/ws (or a joined mesh, whose broker is used)"}
	}
	base, err := httpBase(broker)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	var start struct {
		DeviceCode      string `json:"device_code"`
		UserCode        string `json:"user_code"`
		ExpiresAt       string `json:"expires_at"`
		VerificationURL string `json:"verification_url"`
	}
	if err := httpJSON(ctx, http.MethodPost, base+"/cli/device-code", "", map[string]string{"hostname": host, "platform": runtime.GOOS, "arch": runtime.GOARCH}, &start); err != nil {
		return fmt.Errorf("start a login: %w", err)
	}
	fmt.Fprintf(stderr, "To log in, open %s and enter the code %s\nwaiting for the approval (the code expires at %s) …\n", start.VerificationURL, start.UserCode, start.ExpiresAt)
	for {
		var poll struct {
			Status       string `json:"status"`
			SessionToken string `json:"session_token"`
			User         struct {
				ID, Email   string
				DisplayName string `json:"display_name"`
			} `json:"user"`
		}
		if err := httpJSON(ctx, http.MethodGet, base+"/cli/device-code/"+start.DeviceCode, "", nil, &poll); err != nil {
			return fmt.Errorf("poll the login: %w", err)
		}
		switch poll.Status {
		case "approved":
			if err := h.SetLogin(base, peerhome.Login{Token: poll.SessionToken, UserID: poll.User.ID, Email: poll.User.Email, Name: poll.User.DisplayName}); err != nil {
				return err
			}
			if c.json {
				return printJSON(stdout, map[string]any{"broker": base, "userId": poll.User.ID, "email": poll.User.Email})
			}
			fmt.Fprintf(stdout, "logged in to %s as %s (%s)\n", base, nonEmpty(poll.User.DisplayName, poll.User.Email), poll.User.ID)
			return nil
		case "pending":
		case "expired":
			return fmt.Errorf("the code expired before it was approved: run meshpeer login again")
		default:
			return fmt.Errorf("the login ended: %s", poll.Status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(loginPoll):
		}
	}
}

func cmdMeshes(ctx context.Context, args []string, stdout io.Writer) error {
	var c commonFlags
	fs := newFlags("meshes", &c)
	if err := fs.Parse(args); err != nil {
		return usageErr{err.Error()}
	}
	h, err := peerhome.Load(c.home)
	if err != nil {
		return err
	}
	base, login, err := pickLogin(h, c.url)
	if err != nil {
		return err
	}
	var res struct {
		Meshes []map[string]any `json:"meshes"`
	}
	if err := httpJSON(ctx, http.MethodGet, base+"/cli/meshes", login.Token, nil, &res); err != nil {
		return err
	}
	if c.json {
		return printJSON(stdout, res.Meshes)
	}
	for _, m := range res.Meshes {
		fmt.Fprintf(stdout, "%v (%v): %v, %v members, %v online\n", m["slug"], m["id"], m["role"], m["member_count"], m["active_peers"])
	}
	return nil
}

// pickLogin is the login for the broker of -url, else the only one.
func pickLogin(h *peerhome.Home, url string) (string, peerhome.Login, error) {
	if url != "" {
		base, err := httpBase(url)
		if err != nil {
			return "", peerhome.Login{}, err
		}
		l, ok := h.Logins[base]
		if !ok {
			return "", peerhome.Login{}, fmt.Errorf("not logged in to %s: meshpeer login -url %s", base, url)
		}
		return base, l, nil
	}
	if len(h.Logins) != 1 {
		return "", peerhome.Login{}, fmt.Errorf("logged in to %d brokers: choose one with -url", len(h.Logins))
	}
	for base, l := range h.Logins {
		return base, l, nil
	}
	panic("unreachable")
}

// brokerRefusal is a non-200 answer of the broker's HTTP API, with its {error} when it had one.
type brokerRefusal struct {
	status int
	reason string
	body   string
}

func (e *brokerRefusal) Error() string {
	if e.reason != "" {
		return fmt.Sprintf("%s (HTTP %d)", e.reason, e.status)
	}
	return fmt.Sprintf("the broker answered HTTP %d: %.200s", e.status, e.body)
}

// httpJSON makes one request to the broker's HTTP API and decodes a 200 answer; any other
// status is a *brokerRefusal.
func httpJSON(ctx context.Context, method, url, bearer string, body, into any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, url, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reach the broker: %w", err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(answer, &e)
		return &brokerRefusal{status: resp.StatusCode, reason: e.Error, body: strings.TrimSpace(string(answer))}
	}
	if err := json.Unmarshal(answer, into); err != nil {
		return fmt.Errorf("the broker's answer is not JSON: %w", err)
	}
	return nil
}
