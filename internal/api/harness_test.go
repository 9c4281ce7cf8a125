package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/meshbroker/meshbroker/db"
	"github.com/meshbroker/meshbroker/internal/brokertest"
	"github.com/meshbroker/meshbroker/internal/clitoken"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// env is one broker instance on a fresh database, with helpers to call the API.
type env struct {
	t    testing.TB
	d    *testdb.DB
	q    *db.Queries
	inst *brokertest.Instance
	vars map[string]string
}

// appSecret is BROKER_APP_SECRET in every test environment.
const appSecret = "test-app-secret-0123456789"

// newEnv starts a broker on a fresh database; extra overrides environment variables.
func newEnv(t testing.TB, extra map[string]string) *env {
	t.Helper()
	d := testdb.New(t)
	vars := map[string]string{"DATABASE_URL": d.URL, "BROKER_APP_SECRET": appSecret,
		"API_IP_RATE_LIMIT_PER_MIN": "0", "CLI_SYNC_SECRET": "test-sync-secret"}
	for k, v := range extra {
		vars[k] = v
	}
	return &env{t: t, d: d, q: db.New(d.Pool), inst: brokertest.Start(t, vars), vars: vars}
}

// second starts another instance on the same database.
func (e *env) second() *brokertest.Instance { return brokertest.Start(e.t, e.vars) }

// reply is one HTTP answer.
type reply struct {
	Status int
	Body   map[string]any
	Raw    string
	Header http.Header
}

// call sends a request to the first instance. body is marshalled as JSON unless it is a
// string or []byte (sent as is) or nil (no body). token "" sends no Authorization.
func (e *env) call(method, path, token string, body any) reply {
	e.t.Helper()
	return callAt(e.t, e.inst.HTTP, method, path, token, body)
}

func callAt(t testing.TB, base, method, path, token string, body any) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Raw: string(raw), Header: resp.Header}
	_ = json.Unmarshal(raw, &r.Body)
	return r
}

// user creates a user and a bearer token for it (directly in the database).
func (e *env) user(email string) (userID, token string) {
	e.t.Helper()
	userID, token = ids.New(), "cmt_"+ids.New()+ids.New()
	ctx := context.Background()
	if _, err := e.d.Pool.Exec(ctx, `INSERT INTO users (id, name, email) VALUES ($1, $2, $3)`, userID, "User "+email, email); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.d.Pool.Exec(ctx, `INSERT INTO cli_sessions (id, user_id, token_hash, hostname, platform, arch) VALUES ($1, $2, $3, 'test', 'linux', 'amd64')`,
		ids.New(), userID, clitoken.Hash(token)); err != nil {
		e.t.Fatal(err)
	}
	return userID, token
}

// expect fails the test unless r has the status and (if msg != "") the error string.
func expect(t testing.TB, r reply, status int, msg string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d (body %s)", r.Status, status, r.Raw)
	}
	if msg != "" && r.Body["error"] != msg {
		t.Fatalf("error %v, want %q (body %s)", r.Body["error"], msg, r.Raw)
	}
}
