package deploycheck

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/meshbroker/meshbroker/internal/config"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every variable the broker reads is in the README's configuration table with its default.
func TestReadmeDocumentsEveryVariable(t *testing.T) {
	readme := read(t, "../../README.md")
	for _, v := range config.Vars {
		def := "—"
		if v.Default != "" {
			def = "`" + v.Default + "`"
		}
		row := "| `" + v.Name + "` | " + def + " |"
		if !strings.Contains(readme, row) {
			t.Errorf("README configuration table lacks the row starting %q", row)
		}
	}
}

// CI must run exactly the test command the README gives.
func TestCIRunsTheReadmeTestCommand(t *testing.T) {
	readme := read(t, "../../README.md")
	m := regexp.MustCompile("(?s)\\*\\*Run every test:\\*\\*\\s*```sh\\n([^\\n]+)\\n```").FindStringSubmatch(readme)
	if m == nil {
		t.Fatal("README has no 'Run every test' command block")
	}
	ci := read(t, "../../.ci/run")
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(m[1]) + `$`).MatchString(ci) {
		t.Fatalf(".ci/run does not run the README's test command %q", m[1])
	}
}
