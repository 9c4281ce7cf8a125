// Package testdb gives each test a fresh, fully migrated Postgres database of its own.
//
// A test binary's first call starts one server for the whole process (or uses
// TEST_DATABASE_URL when set: any database on a server where that role may CREATE DATABASE),
// migrates a template database once, and then clones it per test with CREATE DATABASE …
// TEMPLATE, which costs milliseconds. Each clone is dropped when its test ends. Tests that
// must stop and restart Postgres under a running broker take a private server from
// NewCluster instead, so they never disturb their neighbours.
//
// Packages using it call testdb.Main from TestMain so the process-wide server is stopped
// and its files removed when the tests finish. All functions are safe for concurrent use.
package testdb

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshbroker/meshbroker/internal/devdb"
	"github.com/meshbroker/meshbroker/internal/ids"
	"github.com/meshbroker/meshbroker/internal/migrate"
)

var (
	setupOnce sync.Once
	setupErr  error
	shared    *server
	counter   atomic.Int64
)

// server is the process-wide Postgres the per-test databases live on.
type server struct {
	adminURL string         // a database on it with CREATEDB rights
	cluster  *devdb.Cluster // nil when TEST_DATABASE_URL is used
	dir      string         // the cluster's temporary directory
	template string         // migrated template database name
	urlFor   func(database string) string
	mu       sync.Mutex // serialises CREATE DATABASE from the template
}

// Main runs the tests of a package and then tears down the shared server.
func Main(m *testing.M) {
	code := m.Run()
	teardown()
	os.Exit(code)
}

// DB is one test's database.
type DB struct {
	Name string
	URL  string
	Pool *pgxpool.Pool
}

// New returns a fresh migrated database for t; it and its pool are dropped when t ends.
func New(t testing.TB) *DB {
	t.Helper()
	s := get(t)
	name := fmt.Sprintf("t_%d_%d_%s", os.Getpid(), counter.Add(1), strings.ToLower(ids.New()[:6]))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{s.template}.Sanitize(), true); err != nil {
		t.Fatalf("testdb: create database: %v", err)
	}
	d := &DB{Name: name, URL: s.urlFor(name)}
	pool, err := pgxpool.New(ctx, d.URL)
	if err != nil {
		t.Fatalf("testdb: pool: %v", err)
	}
	d.Pool = pool
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)", false); err != nil {
			t.Logf("testdb: drop %s: %v", name, err)
		}
	})
	return d
}

// NewEmpty returns a fresh database with no migrations applied (for migration tests).
func NewEmpty(t testing.TB) *DB {
	t.Helper()
	s := get(t)
	name := fmt.Sprintf("e_%d_%d_%s", os.Getpid(), counter.Add(1), strings.ToLower(ids.New()[:6]))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize(), false); err != nil {
		t.Fatalf("testdb: create database: %v", err)
	}
	d := &DB{Name: name, URL: s.urlFor(name)}
	t.Cleanup(func() {
		if d.Pool != nil {
			d.Pool.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)", false)
	})
	return d
}

// NewCluster starts a private Postgres server for t (stopped and removed when t ends), for
// tests that stop and restart the database under a broker. It runs with fsync and
// synchronous commit off: a Kill may lose the last commits. Tests that check what survives
// a crash use NewDurableCluster.
func NewCluster(t testing.TB) *devdb.Cluster {
	t.Helper()
	return newCluster(t, true)
}

// NewDurableCluster is NewCluster with fsync and synchronous commit on, as in production:
// whatever committed before a Kill is there after Restart.
func NewDurableCluster(t testing.TB) *devdb.Cluster {
	t.Helper()
	return newCluster(t, false)
}

func newCluster(t testing.TB, noFsync bool) *devdb.Cluster {
	t.Helper()
	dir, err := tempDir("mbtc")
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := devdb.Start(ctx, devdb.Options{DataDir: dir + "/pg", NoFsync: noFsync})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("testdb: start private cluster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
		os.RemoveAll(dir)
	})
	return c
}

func get(t testing.TB) *server {
	t.Helper()
	setupOnce.Do(func() { shared, setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("testdb: %v", setupErr)
	}
	return shared
}

func setup() (*server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	s := &server{template: fmt.Sprintf("tmpl_%d_%s", os.Getpid(), strings.ToLower(ids.New()[:6]))}
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		s.adminURL = u
		if _, err := pgx.ParseConfig(u); err != nil {
			return nil, fmt.Errorf("TEST_DATABASE_URL: %w", err)
		}
		s.urlFor = func(database string) string { return replaceDatabase(u, database) }
	} else {
		dir, err := tempDir("mbtest")
		if err != nil {
			return nil, err
		}
		c, err := devdb.Start(ctx, devdb.Options{DataDir: dir + "/pg", NoFsync: true, MaxConnections: 300})
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("start test cluster (set TEST_DATABASE_URL to use an existing server): %w", err)
		}
		s.cluster, s.dir = c, dir
		s.adminURL = c.URLFor("postgres")
		s.urlFor = c.URLFor
	}
	if err := s.exec(ctx, "CREATE DATABASE "+pgx.Identifier{s.template}.Sanitize(), false); err != nil {
		return nil, fmt.Errorf("create template: %w", err)
	}
	m, err := migrate.Open(s.urlFor(s.template), nil)
	if err != nil {
		return nil, err
	}
	_, err = m.Up(ctx)
	m.Close()
	if err != nil {
		return nil, fmt.Errorf("migrate template: %w", err)
	}
	return s, nil
}

func teardown() {
	if shared == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if shared.cluster != nil {
		_ = shared.cluster.Stop(ctx)
		os.RemoveAll(shared.dir)
		return
	}
	_ = shared.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{shared.template}.Sanitize()+" WITH (FORCE)", false)
}

// exec runs one statement on the admin database. CREATE DATABASE … TEMPLATE fails if
// another session is copying the same template, so those are serialised.
func (s *server) exec(ctx context.Context, sql string, fromTemplate bool) error {
	if fromTemplate {
		s.mu.Lock()
		defer s.mu.Unlock()
	}
	conn, err := pgx.Connect(ctx, s.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// replaceDatabase swaps the database name in a postgres:// URL or a keyword/value DSN.
func replaceDatabase(dsn, to string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		u.Path = "/" + to
		return u.String()
	}
	return dsn + " dbname=" + to
}

// tempDir makes a temporary directory the cluster's unprivileged user can traverse (when the
// tests run as root, Postgres runs as "postgres"; MkdirTemp's 0700 would lock it out).
func tempDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}
