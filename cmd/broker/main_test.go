package main_test

// These tests run the real broker binary, built once per test run, as an operator would.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshbroker/meshbroker/internal/migrate"
	"github.com/meshbroker/meshbroker/internal/testdb"
)

var brokerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "brokerbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	brokerBin = filepath.Join(dir, "broker")
	out, err := exec.Command("go", "build", "-o", brokerBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build broker: %v\n%s", err, out)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	testdb.Main(m)
}

// baseEnv is the test process environment without anything that would change which
// database the broker uses.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DATABASE_URL", "BROKER_DATA_DIR", "BROKER_PORT", "EXPECTED_MIGRATION", "AUTO_MIGRATE", "BROKER_PG_BINDIR":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a running broker.
type proc struct {
	cmd    *exec.Cmd
	base   string
	stderr *lockedBuffer
	done   chan struct{} // closed when the process has exited
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startServe(t *testing.T, env ...string) *proc {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(brokerBin, "serve")
	cmd.Env = baseEnv(append(env, fmt.Sprintf("BROKER_PORT=%d", port))...)
	p := &proc{cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", port), stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("broker stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// stop sends sig and returns the exit code, failing if the process outlives within.
func (p *proc) stop(t *testing.T, sig os.Signal, within time.Duration) int {
	t.Helper()
	start := time.Now()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("broker did not exit within %s of %v", within, sig)
	}
	t.Logf("exited %s after %v", time.Since(start).Round(time.Millisecond), sig)
	return p.cmd.ProcessState.ExitCode()
}

func getJSON(url string) (int, map[string]any, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body, nil
}

// waitStatus polls path until it answers want, and returns the body and how long it took.
func (p *proc) waitStatus(t *testing.T, path string, want int, within time.Duration) (map[string]any, time.Duration) {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < within {
		select {
		case <-p.done:
			t.Fatalf("broker exited early (%v); stderr:\n%s", p.cmd.ProcessState, p.stderr.String())
		default:
		}
		code, body, err := getJSON(p.base + path)
		if err == nil && code == want {
			return body, time.Since(start)
		}
		last = fmt.Sprintf("%d %v %v", code, body, err)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %d within %s; last: %s", path, want, within, last)
	return nil, 0
}

func run(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(brokerBin, args...)
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { <-ctx.Done(); _ = cmd.Process.Kill() }()
	_ = cmd.Wait()
	return cmd.ProcessState.ExitCode(), o.String(), e.String()
}

func tempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// When tests run as root, the embedded cluster runs as "postgres", which must traverse
	// the directory and its per-test parent (both 0700 from the testing package).
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The embedded default: no DATABASE_URL, an empty data dir, ready within 15 s, data kept
// across a restart, SIGTERM drains to exit 0 and stops the cluster it started.
func TestEmbeddedDefaultKeepsDataAcrossRestart(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(tempDir(t), "data", "pg")
	env := []string{"BROKER_DATA_DIR=" + dataDir, "DRAIN_TIMEOUT=5s"}

	p := startServe(t, env...)
	body, took := p.waitStatus(t, "/health/ready", 200, 15*time.Second)
	t.Logf("first start (initdb + migrate) ready after %s", took.Round(time.Millisecond))
	if body["migration"] != float64(migrate.LatestVersion()) {
		t.Fatalf("ready body %v", body)
	}

	// Write through the cluster's private socket while the broker runs.
	dbURL := (&url.URL{Scheme: "postgres", User: url.User("meshbroker"), Path: "/meshbroker",
		RawQuery: url.Values{"host": {dataDir + ".run"}, "port": {"5432"}}.Encode()}).String()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO users (id, name) VALUES ('u-persist', 'kept across restarts')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM exit code %d; stderr:\n%s", code, p.stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("embedded postgres still running after the broker exited (postmaster.pid: %v)", err)
	}
	checkJSONLines(t, p.stderr.String())

	p2 := startServe(t, env...)
	_, took = p2.waitStatus(t, "/health/ready", 200, 15*time.Second)
	t.Logf("restart ready after %s", took.Round(time.Millisecond))
	conn, err = pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	var name string
	err = conn.QueryRow(ctx, "SELECT name FROM users WHERE id = 'u-persist'").Scan(&name)
	conn.Close(ctx)
	if err != nil || name != "kept across restarts" {
		t.Fatalf("row lost across restart: %q %v", name, err)
	}
	if code := p2.stop(t, syscall.SIGINT, 10*time.Second); code != 0 {
		t.Fatalf("SIGINT exit code %d", code)
	}
}

func checkJSONLines(t *testing.T, stderr string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(stderr))
	n := 0
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("stderr line is not a JSON object: %q", sc.Text())
			continue
		}
		if rec["ts"] == nil || rec["level"] == nil || rec["msg"] == nil {
			t.Errorf("log line lacks ts/level/msg: %q", sc.Text())
		}
		n++
	}
	if n == 0 {
		t.Error("no log lines")
	}
}

func TestExpectedMigrationAboveAppliedIsNotReady(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	latest := migrate.LatestVersion()
	p := startServe(t, "DATABASE_URL="+d.URL, fmt.Sprintf("EXPECTED_MIGRATION=%d", latest+1))
	body, _ := p.waitStatus(t, "/health/ready", 503, 15*time.Second)
	if body["reason"] != "migration_missing" || body["expected"] != float64(latest+1) || body["migration"] != float64(latest) {
		t.Fatalf("want migration_missing with expected %d and migration %d, got %v", latest+1, latest, body)
	}
	if code, body, err := getJSON(p.base + "/health"); err != nil || code != 200 || body["db"] != "up" {
		t.Fatalf("/health: %d %v %v", code, body, err)
	}
}

func TestMigrateCommands(t *testing.T) {
	t.Parallel()
	d := testdb.NewEmpty(t)
	env := baseEnv("DATABASE_URL=" + d.URL)

	code, out, errOut := run(t, env, "migrate", "status")
	latest := int(migrate.LatestVersion())
	if code != 0 || strings.Count(out, "pending") != latest {
		t.Fatalf("status on empty db: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, env, "migrate", "up")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("schema at version %d (%d applied now)", latest, latest)) {
		t.Fatalf("up: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = run(t, env, "migrate", "up")
	if code != 0 || !strings.Contains(out, "(0 applied now)") {
		t.Fatalf("second up should apply nothing: %d\n%s", code, out)
	}
	code, out, errOut = run(t, env, "migrate", "down-to", "1")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("schema at version 1 (%d reverted now)", latest-1)) {
		t.Fatalf("down-to 1: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = run(t, env, "migrate", "status")
	if code != 0 || strings.Count(out, "applied") != 1 || strings.Count(out, "pending") != latest-1 {
		t.Fatalf("status after down-to 1: %d\n%s", code, out)
	}
	code, out, _ = run(t, env, "migrate", "down-to", "0")
	if code != 0 || !strings.Contains(out, "schema at version 0") {
		t.Fatalf("down-to 0: %d\n%s", code, out)
	}
}

func TestBadInputExitsNonZeroWithAMessage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		env      []string
		args     []string
		wantCode int
		wantErr  []string
	}{
		{"bad port", []string{"BROKER_PORT=seventy"}, []string{"serve"}, 2, []string{"BROKER_PORT", "expected an integer"}},
		{"bad drain", []string{"DRAIN_TIMEOUT=later"}, []string{}, 2, []string{"DRAIN_TIMEOUT", "duration"}},
		{"bad database url", []string{"DATABASE_URL=mysql://x"}, []string{"migrate", "up"}, 2, []string{"DATABASE_URL", "postgres://"}},
		{"unknown command", nil, []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`, "usage:"}},
		{"bad down-to", nil, []string{"migrate", "down-to", "x"}, 2, []string{"not a version number"}},
		{"migrate alone", nil, []string{"migrate"}, 2, []string{"up, status or down-to"}},
		{"no postgres binaries", []string{"BROKER_PG_BINDIR=/nonexistent", "BROKER_DATA_DIR=" + filepath.Join(tempDir(t), "pg")},
			[]string{"serve"}, 1, []string{"DATABASE_URL", "apt-get install postgresql"}},
	}
	for _, c := range cases {
		code, _, errOut := run(t, baseEnv(c.env...), c.args...)
		if code != c.wantCode {
			t.Errorf("%s: exit %d, want %d; stderr:\n%s", c.name, code, c.wantCode, errOut)
		}
		for _, w := range c.wantErr {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", c.name, w, errOut)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, out, _ := run(t, baseEnv(), "version")
	if code != 0 || !strings.HasPrefix(out, "broker ") || !strings.Contains(out, "commit") {
		t.Fatalf("version: %d %q", code, out)
	}
}

func TestAdminProvisioning(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	env := baseEnv("DATABASE_URL=" + d.URL)
	decode := func(out string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("stdout is not JSON: %q", out)
		}
		return m
	}

	code, out, errOut := run(t, env, "admin", "mesh", "create", "--name", "Platform Team")
	if code != 0 {
		t.Fatalf("mesh create: %d %s", code, errOut)
	}
	mesh := decode(out)
	meshID, _ := mesh["meshId"].(string)
	if len(meshID) != 32 || mesh["slug"] != "platform-team" {
		t.Fatalf("mesh create output %v", mesh)
	}
	_, out, _ = run(t, env, "admin", "mesh", "create", "--name", "platform team")
	if decode(out)["slug"] != "platform-team-2" {
		t.Fatalf("second mesh with the same slug: %s", out)
	}

	pub := strings.Repeat("ab", 32)
	code, out, errOut = run(t, env, "admin", "member", "add", "--mesh", meshID, "--pubkey", pub, "--name", "alice", "--role", "admin")
	if code != 0 {
		t.Fatalf("member add: %d %s", code, errOut)
	}
	memberID, _ := decode(out)["memberId"].(string)
	if len(memberID) != 32 {
		t.Fatalf("member add output %s", out)
	}

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"member", "add", "--mesh", meshID, "--pubkey", pub, "--name", "again"}, "already has a member with this pubkey"},
		{[]string{"member", "add", "--mesh", meshID, "--pubkey", "xyz", "--name", "b"}, "64 hex characters"},
		{[]string{"member", "add", "--mesh", meshID, "--pubkey", strings.Repeat("cd", 32), "--name", "b", "--role", "owner"}, "--role must be member or admin"},
		{[]string{"member", "add", "--mesh", "nope", "--pubkey", strings.Repeat("cd", 32), "--name", "b"}, `no mesh with id "nope"`},
		{[]string{"mesh", "create", "--name", "  "}, "--name is required"},
		{[]string{"member", "revoke", "--mesh", meshID, "--member", "nobody"}, "no unrevoked member"},
		{[]string{"mesh", "create", "--bogus", "x"}, "flag provided but not defined"},
	}
	for _, b := range bad {
		code, out, errOut := run(t, env, append([]string{"admin"}, b.args...)...)
		if code != 2 || out != "" || !strings.Contains(errOut, b.want) {
			t.Errorf("admin %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", b.args, code, out, errOut, b.want)
		}
	}

	code, out, errOut = run(t, env, "admin", "member", "revoke", "--mesh", meshID, "--member", memberID)
	if code != 0 || decode(out)["revoked"] != true {
		t.Fatalf("revoke: %d %s %s", code, out, errOut)
	}
	if code, _, _ := run(t, env, "admin", "member", "revoke", "--mesh", meshID, "--member", memberID); code != 2 {
		t.Fatalf("second revoke exit %d, want 2", code)
	}
	// The revoked key may be added again as a new member.
	if code, _, errOut := run(t, env, "admin", "member", "add", "--mesh", meshID, "--pubkey", pub, "--name", "alice2"); code != 0 {
		t.Fatalf("re-add after revoke: %s", errOut)
	}
}

func TestAuditVerifyCommand(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	env := baseEnv("DATABASE_URL=" + d.URL)
	ctx := context.Background()
	// A chain of two rows written the way the broker writes them.
	if _, err := d.Pool.Exec(ctx, "INSERT INTO meshes (id, name, slug) VALUES ('m1', 'm', 'm')"); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, env, "audit", "verify", "--mesh", "m1")
	if code != 0 || !strings.Contains(out, `"valid":true`) || !strings.Contains(out, `"entries":0`) {
		t.Fatalf("empty chain: %d %s %s", code, out, errOut)
	}
	if _, err := d.Pool.Exec(ctx, `INSERT INTO audit_log (mesh_id, event_type, payload, prev_hash, hash, created_at)
		VALUES ('m1', 'peer_left', '{}', 'genesis', 'not-the-hash', now())`); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, env, "audit", "verify", "--mesh", "m1")
	if code != 1 || !strings.Contains(out, `"valid":false`) || !strings.Contains(out, `"brokenAt"`) {
		t.Fatalf("broken chain: exit %d, %s", code, out)
	}
	if code, _, errOut := run(t, env, "audit", "verify"); code != 2 || !strings.Contains(errOut, "--mesh") {
		t.Fatalf("missing --mesh: %d %s", code, errOut)
	}
	// An unknown mesh is an error, not an empty valid chain.
	code, out, errOut = run(t, env, "audit", "verify", "--mesh", "nope")
	if code != 1 || out != "" || errOut != "broker: mesh nope not found\n" {
		t.Fatalf("unknown mesh: exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errOut, "mesh nope not found")
	}
	// An archived mesh may still be verified.
	if _, err := d.Pool.Exec(ctx, "INSERT INTO meshes (id, name, slug, archived_at) VALUES ('m2', 'old', 'old', now())"); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, env, "audit", "verify", "--mesh", "m2")
	if code != 0 || out != `{"entries":0,"meshId":"m2","valid":true}`+"\n" {
		t.Fatalf("archived mesh: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// noDatabaseEnv is an environment in which any command that opens the database fails with
// exit 1 (no DATABASE_URL, no Postgres binaries for the embedded cluster), and the data
// directory it would create.
func noDatabaseEnv(t *testing.T) ([]string, string) {
	dataDir := filepath.Join(tempDir(t), "pg")
	return baseEnv("BROKER_PG_BINDIR=/nonexistent", "BROKER_DATA_DIR="+dataDir), dataDir
}

// --help, -h and help at every level print that level's usage on stdout and exit 0, without
// running the command or opening the database; a leaf's usage lists its flags, a group's the
// commands below it.
func TestHelpAtEveryLevel(t *testing.T) {
	t.Parallel()
	env, dataDir := noDatabaseEnv(t)
	levels := []struct {
		path  string
		lists []string // lines the usage must have: a leaf's flags and arguments, a group's commands
	}{
		{"", []string{"serve", "migrate up", "migrate status", "migrate down-to N", "admin mesh create",
			"admin member add", "admin member revoke", "admin invite create", "audit verify", "version", "help [COMMAND]"}},
		{"serve", nil},
		{"migrate", []string{"migrate up", "migrate status", "migrate down-to N"}},
		{"migrate up", nil},
		{"migrate status", nil},
		{"migrate down-to", []string{"N"}},
		{"admin", []string{"admin mesh create", "admin mesh list", "admin mesh archive ID", "admin member add", "admin member list", "admin member revoke",
			"admin user create", "admin user list", "admin token create", "admin token list", "admin token revoke ID", "admin invite create"}},
		{"admin user", []string{"admin user create", "admin user list"}},
		{"admin user create", []string{"--email EMAIL", "--name NAME"}},
		{"admin user list", nil},
		{"admin token", []string{"admin token create", "admin token list", "admin token revoke ID"}},
		{"admin token create", []string{"--user ID", "--label LABEL"}},
		{"admin token list", []string{"--user ID"}},
		{"admin token revoke", []string{"ID"}},
		{"admin mesh", []string{"admin mesh create"}},
		{"admin mesh create", []string{"--name NAME"}},
		{"admin member", []string{"admin member add", "admin member revoke"}},
		{"admin member add", []string{"--mesh ID", "--pubkey HEX", "--name NAME", "--role member|admin"}},
		{"admin member revoke", []string{"--mesh ID", "--member ID"}},
		{"admin invite", []string{"admin invite create"}},
		{"admin invite create", []string{"--mesh ID", "--role member|admin", "--max-uses N", "--expires-in D"}},
		{"audit", []string{"audit verify"}},
		{"audit verify", []string{"--mesh ID"}},
		{"version", nil},
	}
	for _, l := range levels {
		words := strings.Fields(l.path)
		want := "usage: " + strings.TrimSpace("broker "+l.path)
		if l.path == "" {
			want = "usage: broker [COMMAND]"
		}
		forms := [][]string{
			append(slices.Clone(words), "--help"),
			append(slices.Clone(words), "-h"),
			append(slices.Clone(words), "help"),
			append([]string{"help"}, words...),
		}
		for _, args := range forms {
			code, out, errOut := run(t, env, args...)
			if code != 0 || errOut != "" || !strings.HasPrefix(out, want+"\n") && !strings.HasPrefix(out, want+" ") {
				t.Errorf("broker %s: exit %d, stderr %q, stdout:\n%s\nwant exit 0 and stdout starting %q",
					strings.Join(args, " "), code, errOut, out, want)
				continue
			}
			for _, item := range l.lists {
				// "  ITEM  meaning": every flag, argument and command has its one-line meaning.
				if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(item) + ` +\S`).MatchString(out) {
					t.Errorf("broker %s: usage lacks the line %q with its meaning:\n%s", strings.Join(args, " "), item, out)
				}
			}
		}
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("help touched the embedded database's directory (%v)", err)
	}
}

// Usage errors exit 2 with every problem named at once, the command's usage on stderr and
// nothing on stdout, before any database is opened (which would exit 1 in this environment).
func TestUsageErrorsBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	env, dataDir := noDatabaseEnv(t)
	cases := []struct {
		args  []string
		msg   string
		usage string
	}{
		{[]string{"admin", "member", "add"}, "admin member add: missing required flags: --mesh, --pubkey, --name",
			"usage: broker admin member add --mesh ID --pubkey HEX --name NAME [--role member|admin]"},
		{[]string{"admin", "member", "add", "--name", "x", "--role", "admin"}, "admin member add: missing required flags: --mesh, --pubkey",
			"usage: broker admin member add"},
		{[]string{"admin", "member", "revoke"}, "admin member revoke: missing required flags: --mesh, --member",
			"usage: broker admin member revoke"},
		{[]string{"admin", "mesh", "create"}, "admin mesh create: missing required flag: --name", "usage: broker admin mesh create"},
		{[]string{"audit", "verify"}, "audit verify: missing required flag: --mesh", "usage: broker audit verify"},
		{[]string{"admin", "mesh", "create", "--name", "x", "--bogus", "y"}, "admin mesh create: flag provided but not defined: -bogus",
			"usage: broker admin mesh create"},
		{[]string{"admin", "mesh", "create", "--name", "x", "extra"}, `admin mesh create: unexpected argument "extra"`,
			"usage: broker admin mesh create"},
		{[]string{"audit", "verify", "--mesh", "m", "extra"}, `audit verify: unexpected argument "extra"`, "usage: broker audit verify"},
		{[]string{"serve", "extra"}, `serve: unexpected argument "extra"`, "usage: broker serve"},
		{[]string{"version", "--short"}, "version: flag provided but not defined: -short", "usage: broker version"},
		{[]string{"migrate", "up", "extra"}, `migrate up: unexpected argument "extra"`, "usage: broker migrate up"},
		{[]string{"migrate", "down-to"}, "migrate down-to: missing argument N", "usage: broker migrate down-to N"},
		{[]string{"admin"}, "admin needs a subcommand: mesh, member, user, token or invite", "usage: broker admin COMMAND"},
		{[]string{"admin", "user", "create"}, "admin user create: missing required flag: --email", "usage: broker admin user create --email EMAIL [--name NAME]"},
		{[]string{"admin", "token", "create", "--label", "x"}, "admin token create: missing required flag: --user", "usage: broker admin token create --user ID [--label LABEL]"},
		{[]string{"admin", "token", "revoke"}, "admin token revoke: missing argument ID", "usage: broker admin token revoke ID"},
		{[]string{"admin", "token", "revoke", "a", "b"}, `admin token revoke: unexpected argument "b"`, "usage: broker admin token revoke ID"},
		{[]string{"admin", "user", "list", "x"}, `admin user list: unexpected argument "x"`, "usage: broker admin user list"},
		{[]string{"admin", "member", "remove"}, `unknown admin member subcommand "remove"`, "usage: broker admin member COMMAND"},
		{[]string{"help", "admin", "nothing"}, `unknown admin subcommand "nothing"`, "usage: broker admin COMMAND"},
	}
	for _, c := range cases {
		code, out, errOut := run(t, env, c.args...)
		if code != 2 || out != "" || !strings.HasPrefix(errOut, "broker: "+c.msg+"\n\n"+c.usage) {
			t.Errorf("broker %s: exit %d, stdout %q, stderr:\n%s\nwant exit 2, nothing on stdout, %q and %q on stderr",
				strings.Join(c.args, " "), code, out, errOut, c.msg, c.usage)
		}
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("a usage error touched the embedded database's directory (%v)", err)
	}
}

// Accounts and bearers from the command line: a user, a token that authenticates on a
// running broker until it is revoked, the lists (never the token), and bad input exit 2.
func TestAdminAccounts(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	env := baseEnv("DATABASE_URL=" + d.URL)
	decode := func(out string) map[string]any {
		t.Helper()
		var m map[string]any
		if strings.Count(out, "\n") != 1 || json.Unmarshal([]byte(out), &m) != nil {
			t.Fatalf("stdout is not one JSON line: %q", out)
		}
		return m
	}
	code, out, errOut := run(t, env, "admin", "user", "create", "--email", "ops@example.com", "--name", "Ops")
	if code != 0 {
		t.Fatalf("user create: %d %s", code, errOut)
	}
	u := decode(out)
	userID, _ := u["userId"].(string)
	if len(userID) != 32 || u["email"] != "ops@example.com" || u["name"] != "Ops" {
		t.Fatalf("user create output %s", out)
	}
	code, out, _ = run(t, env, "admin", "user", "list")
	if users, _ := decode(out)["users"].([]any); code != 0 || len(users) != 1 || users[0].(map[string]any)["userId"] != userID {
		t.Fatalf("user list: %s", out)
	}

	code, out, errOut = run(t, env, "admin", "token", "create", "--user", userID, "--label", "ci")
	if code != 0 {
		t.Fatalf("token create: %d %s", code, errOut)
	}
	tok := decode(out)
	token, _ := tok["token"].(string)
	tokenID, _ := tok["tokenId"].(string)
	if !strings.HasPrefix(token, "cm_") || tok["userId"] != userID || tok["label"] != "ci" || tokenID == "" {
		t.Fatalf("token create output %s", out)
	}
	var stored string
	if err := d.Pool.QueryRow(context.Background(), "SELECT token_hash FROM cli_sessions WHERE id = $1", tokenID).Scan(&stored); err != nil ||
		strings.Contains(stored, token) || len(stored) != 64 {
		t.Fatalf("stored %q (%v): only the hash may be stored", stored, err)
	}
	code, out, _ = run(t, env, "admin", "token", "list", "--user", userID)
	if code != 0 || strings.Contains(out, token) {
		t.Fatalf("token list shows the token or failed: %d %s", code, out)
	}
	list, _ := decode(out)["tokens"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != tokenID || list[0].(map[string]any)["label"] != "ci" ||
		list[0].(map[string]any)["revoked"] != false || list[0].(map[string]any)["lastSeenAt"] == nil {
		t.Fatalf("token list: %s", out)
	}

	// The token works on a running broker, and not after revocation.
	p := startServe(t, "DATABASE_URL="+d.URL)
	p.waitStatus(t, "/health/ready", 200, 15*time.Second)
	sessions := func() int {
		req, _ := http.NewRequest("GET", p.base+"/cli/sessions", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := sessions(); s != 200 {
		t.Fatalf("GET /cli/sessions with the minted token: %d", s)
	}
	code, out, errOut = run(t, env, "admin", "token", "revoke", tokenID)
	if code != 0 || decode(out)["revoked"] != true || decode(out)["tokenId"] != tokenID {
		t.Fatalf("token revoke: %d %s %s", code, out, errOut)
	}
	if s := sessions(); s != 401 {
		t.Fatalf("revoked token answered %d", s)
	}
	_, out, _ = run(t, env, "admin", "token", "list", "--user", userID)
	if list, _ := decode(out)["tokens"].([]any); len(list) != 1 || list[0].(map[string]any)["revoked"] != true {
		t.Fatalf("token list after revoke: %s", out)
	}

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"user", "create", "--email", "OPS@example.com"}, `a user with email "OPS@example.com" already exists`},
		{[]string{"user", "create", "--email", "not-an-email"}, "--email must be an email address"},
		{[]string{"user", "create", "--email", "a@b", "--name", strings.Repeat("n", 201)}, "--name is longer than 200 characters"},
		{[]string{"token", "create", "--user", "nobody"}, `no user with id "nobody"`},
		{[]string{"token", "create", "--user", userID, "--label", strings.Repeat("l", 201)}, "--label is longer than 200 characters"},
		{[]string{"token", "list", "--user", "nobody"}, `no user with id "nobody"`},
		{[]string{"token", "revoke", "nope"}, `no unrevoked token with id "nope"`},
		{[]string{"token", "revoke", tokenID}, "no unrevoked token with id"},
	}
	for _, b := range bad {
		code, out, errOut := run(t, env, append([]string{"admin"}, b.args...)...)
		if code != 2 || out != "" || !strings.Contains(errOut, b.want) {
			t.Errorf("admin %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", b.args, code, out, errOut, b.want)
		}
	}
}
