package devdb

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func tempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil { // reachable by "postgres" when tests run as root
			t.Fatal(err)
		}
	}
	return dir
}

func query(t *testing.T, url, sql string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A second Start on the same data directory attaches to the running cluster and leaves it
// running when it stops; the first owner's Stop shuts it down.
func TestStartAttachesToRunningCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dataDir := filepath.Join(tempDir(t), "pg")
	first, err := Start(ctx, Options{DataDir: dataDir, NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Stop(ctx)
	if !first.Owned() {
		t.Fatal("first Start should own the postmaster")
	}
	if got := query(t, first.URL(), "SELECT current_database()"); got != "meshbroker" {
		t.Fatalf("database %q", got)
	}
	// Nothing listens on TCP: the socket directory is the only way in.
	if got := query(t, first.URL(), "SHOW listen_addresses"); got != "" {
		t.Fatalf("listen_addresses = %q, want empty", got)
	}

	second, err := Start(ctx, Options{DataDir: dataDir, Database: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if second.Owned() {
		t.Fatal("second Start must attach, not own")
	}
	if got := query(t, second.URL(), "SELECT current_database()"); got != "other" {
		t.Fatalf("attached database %q", got)
	}
	if err := second.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Still up after the attached one stopped.
	query(t, first.URL(), "SELECT 'still up'")

	if err := first.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("postmaster.pid after Stop: %v", err)
	}
}

// Kill then Restart brings the same cluster back with its data.
func TestKillAndRestartKeepData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := Start(ctx, Options{DataDir: filepath.Join(tempDir(t), "pg")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(ctx)
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('yes')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = pgx.Connect(cctx, c.URL())
	cancel()
	if err == nil {
		t.Fatal("connected to a killed cluster")
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := query(t, c.URL(), "SELECT v FROM kept"); got != "yes" {
		t.Fatalf("after restart: %q", got)
	}
}

func TestNonEmptyDirectoryWithoutClusterIsRefused(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(tempDir(t), "pg")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "precious.txt"), []byte("do not initdb over me"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("want a refusal naming the non-empty directory, got %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "precious.txt")); string(b) != "do not initdb over me" {
		t.Fatal("existing file was touched")
	}
}

func TestMissingBinariesSayHowToFix(t *testing.T) {
	t.Setenv("BROKER_PG_BINDIR", "/nonexistent")
	_, err := Start(context.Background(), Options{DataDir: t.TempDir()})
	if !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("want ErrNoBinaries, got %v", err)
	}
	for _, hint := range []string{"apt-get install postgresql", "brew install", "DATABASE_URL"} {
		if !strings.Contains(err.Error(), hint) {
			t.Errorf("error lacks %q: %v", hint, err)
		}
	}
}

func TestFindBinariesOnThisMachine(t *testing.T) {
	dir, err := FindBinaries()
	if err != nil {
		t.Fatalf("the project's machines have PostgreSQL server binaries: %v", err)
	}
	if !hasServer(dir) {
		t.Fatalf("%s lacks initdb/postgres", dir)
	}
}

func TestVersionOrdering(t *testing.T) {
	if versionOf("/usr/lib/postgresql/16/bin") <= versionOf("/usr/lib/postgresql/9.6/bin") {
		t.Fatal("16 must sort above 9.6")
	}
}

// A data directory whose socket path would exceed the unix socket limit gets a short
// temporary socket directory instead.
func TestLongPathsUseShortSocketDir(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	long := tempDir(t)
	for len(long) < 120 {
		long = filepath.Join(long, "a-rather-long-directory-name")
	}
	if err := os.MkdirAll(long, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := long; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	c, err := Start(ctx, Options{DataDir: filepath.Join(long, "pg"), NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(ctx)
	if len(c.socketDir) > 90 {
		t.Fatalf("socket dir %q too long", c.socketDir)
	}
	query(t, c.URL(), "SELECT 'ok'")
}
