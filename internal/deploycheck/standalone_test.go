package deploycheck

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the repository root, seen from this package's directory (where go test runs).
const repoRoot = "../.."

// trackedFiles lists the repository's tracked files (git ls-files), slash-separated and
// relative to the root. CI runs on a clone, so git is there.
func trackedFiles(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	if len(files) < 10 {
		t.Fatalf("git ls-files listed %d files: not the repository?", len(files))
	}
	return files
}

// resolve returns the repository path that target names, relative to the repository file
// from (a leading slash is the repository root, as on GitHub); it starts with ".." when the
// target is outside the repository.
func resolve(from, target string) string {
	base := path.Dir(from)
	if strings.HasPrefix(target, "/") {
		base, target = ".", strings.TrimLeft(target, "/")
	}
	return path.Join(base, target)
}

func escapes(from, target string) bool {
	p := resolve(from, target)
	return p == ".." || strings.HasPrefix(p, "../")
}

var (
	// [text](target "title") and ![alt](target); the target ends at a space or ')'.
	inlineLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)`)
	// [label]: target
	refLink = regexp.MustCompile(`(?m)^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(\s|$)`)
	scheme  = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// markdownTargets returns the relative link targets of a markdown text, without their
// #fragment or ?query.
func markdownTargets(text string) []string {
	var out []string
	for _, re := range []*regexp.Regexp{inlineLink, refLink} {
		for _, m := range re.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if scheme.MatchString(target) || strings.HasPrefix(target, "#") {
				continue
			}
			if i := strings.IndexAny(target, "#?"); i >= 0 {
				target = target[:i]
			}
			if target != "" {
				out = append(out, target)
			}
		}
	}
	return out
}

// goRelativePaths returns the string literals of a Go file that start with "../": the paths
// a test or tool would open relative to its package directory.
func goRelativePaths(t *testing.T, name string, src []byte) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.SkipObjectResolution)
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return nil
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if s, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(s, "../") {
				out = append(out, s)
			}
		}
		return true
	})
	return out
}

// The repository stands alone: a clone with nothing beside it builds, runs and passes its
// tests. No tracked file names the sibling directory the project once read fixtures, tools
// and the protocol from; no markdown link leaves the repository or points at nothing; no Go
// file opens a relative path above the repository root.
func TestRepositoryStandsAlone(t *testing.T) {
	sibling := []byte(".." + "/" + "shared") // not spelled out, or this file would match
	tracked := trackedFiles(t)
	exists := map[string]bool{}
	for _, f := range tracked {
		exists[f] = true
		for d := path.Dir(f); d != "."; d = path.Dir(d) {
			exists[d] = true
		}
	}
	for _, f := range tracked {
		b, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(f)))
		if os.IsNotExist(err) {
			continue // deleted in the work tree, not yet in the index
		}
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, sibling); i >= 0 {
			t.Errorf("%s:%d names %s, outside the repository", f, bytes.Count(b[:i], []byte("\n"))+1, sibling)
		}
		switch {
		case strings.HasSuffix(f, ".md"):
			for _, target := range markdownTargets(string(b)) {
				switch {
				case escapes(f, target):
					t.Errorf("%s links %q, outside the repository", f, target)
				case !exists[resolve(f, target)]:
					t.Errorf("%s links %q, which is not a tracked file or directory", f, target)
				}
			}
		case strings.HasSuffix(f, ".go"):
			for _, p := range goRelativePaths(t, f, b) {
				if escapes(f, p) {
					t.Errorf("%s opens %q, outside the repository", f, p)
				}
			}
		}
	}
}

// The checks above must recognise what they look for.
func TestStandaloneChecksRecogniseEscapes(t *testing.T) {
	md := "see [the contract](../" + "shared/PROTOCOL.md) and [ops](docs/operations.md#runbook), " +
		"![img](<../x.png>) [web](https://example.com/../a) [top](#top)\n[ref]: ../../outside.md \"t\"\n"
	got := markdownTargets(md)
	want := []string{"../" + "shared/PROTOCOL.md", "docs/operations.md", "../x.png", "../../outside.md"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("markdown targets %q, want %q", got, want)
	}
	for _, c := range []struct {
		from, target string
		out          bool
	}{
		{"README.md", "docs/protocol.md", false},
		{"README.md", "../sibling/PROTOCOL.md", true},
		{"docs/benchmarks.md", "../README.md", false},
		{"docs/benchmarks.md", "../../sibling/limits", true},
		{"internal/audit/chain_test.go", strings.Repeat("../", 3) + "sibling/fixtures/x.json", true}, // built: a literal would trip the check on this file
		{"internal/deploycheck/fly_test.go", "../../fly.toml", false},
		{"internal/deploycheck/fly_test.go", "../..", false},
		{"README.md", "/docs/protocol.md", false},
		{"README.md", "/../outside", true},
		{"README.md", "/work/sibling/x.md", false}, // inside, by GitHub's reading: then it must exist
	} {
		if got := escapes(c.from, c.target); got != c.out {
			t.Errorf("escapes(%q, %q) = %v, want %v", c.from, c.target, got, c.out)
		}
	}
	src := []byte("package p\nvar a, b, c = \"../../x\", `../y`, \"a/../b\"\n")
	if got := goRelativePaths(t, "p.go", src); strings.Join(got, " ") != "../../x ../y" {
		t.Errorf("Go relative paths %q", got)
	}
}
