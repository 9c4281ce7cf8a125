package devdb

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNoBinaries means no PostgreSQL server installation was found. Its message says how to
// install one or how to point the broker at an existing server instead.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, postgres) found on PATH or under " +
	"/usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, /usr/local/pgsql/bin or Homebrew's prefixes; " +
	"install them (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; " +
	"macOS: brew install postgresql@16) or set DATABASE_URL to a running Postgres")

// searchGlobs are the usual install prefixes, checked when PATH has no initdb. Within one
// glob the highest major version wins.
var searchGlobs = []string{
	"/usr/lib/postgresql/*/bin",         // Debian, Ubuntu
	"/usr/pgsql-*/bin",                  // RHEL, Fedora (PGDG)
	"/usr/local/pgsql/bin",              // source builds
	"/opt/homebrew/opt/postgresql*/bin", // Homebrew, Apple silicon
	"/usr/local/opt/postgresql*/bin",    // Homebrew, Intel
	"/opt/homebrew/bin",
	"/Applications/Postgres.app/Contents/Versions/latest/bin",
}

// FindBinaries returns the directory holding initdb and postgres: BROKER_PG_BINDIR when set,
// else the directory of initdb on PATH, else the newest of the usual install prefixes.
func FindBinaries() (string, error) {
	if dir := os.Getenv("BROKER_PG_BINDIR"); dir != "" {
		if hasServer(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("BROKER_PG_BINDIR=%q has no initdb and postgres: %w", dir, ErrNoBinaries)
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if dir := filepath.Dir(p); hasServer(dir) {
			return dir, nil
		}
	}
	for _, g := range searchGlobs {
		matches, _ := filepath.Glob(g)
		sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
		for _, dir := range matches {
			if hasServer(dir) {
				return dir, nil
			}
		}
	}
	return "", ErrNoBinaries
}

func hasServer(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionOf extracts the first number in a path such as /usr/lib/postgresql/15/bin, so that
// 16 sorts above 9.6.
func versionOf(path string) float64 {
	f := strings.FieldsFunc(path, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	for _, s := range f {
		if v, err := strconv.ParseFloat(strings.Trim(s, "."), 64); err == nil {
			return v
		}
	}
	return 0
}
