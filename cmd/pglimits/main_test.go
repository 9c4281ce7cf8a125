package main

import (
	"bytes"
	"strings"
	"testing"
)

// Bad flags exit 2 with a message and the usage on stderr, before any connection: the DSN
// below refuses connections, and a run that reached it would exit through log.Fatal.
func TestBadFlagsExitTwoBeforeConnecting(t *testing.T) {
	const dsn = "postgres://pglimits@127.0.0.1:1/none?connect_timeout=1"
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-dsn", dsn, "-test", "bogus"}, `-test "bogus": want one of insert, listen, claim, setup`},
		{[]string{"-dsn", dsn, "-notify", "sometimes"}, `-notify "sometimes": want one of none, each, tx, batch`},
		{[]string{"-dsn", dsn, "-c", "0"}, "-c 0: at least 1 connection"},
		{[]string{"-dsn", dsn, "-rows", "0"}, "-rows 0: at least 1"},
		{[]string{"-dsn", dsn, "-d", "0s"}, "-d 0s: must be positive"},
		{[]string{"-dsn", dsn, "-test", "listen", "-rate", "0"}, "-rate 0: at least 1 notification/s"},
		{[]string{"-dsn", dsn, "-test", "claim", "-n", "-5"}, "-n -5: at least 1 pending row"},
		{[]string{"-dsn", dsn, "insert"}, `unexpected argument "insert"`},
		{[]string{"-dsn", dsn, "-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"-test", "insert"}, "-dsn (or DATABASE_URL) is required"},
	}
	t.Setenv("DATABASE_URL", "")
	for _, c := range cases {
		var out, errOut bytes.Buffer
		code := run(c.args, &out, &errOut)
		if code != 2 || out.Len() != 0 || !strings.HasPrefix(errOut.String(), "pglimits: "+c.want+"\n") ||
			!strings.Contains(errOut.String(), "usage: pglimits") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2, nothing on stdout, %q and the usage on stderr",
				c.args, code, out.String(), errOut.String(), c.want)
		}
	}
}

func TestHelpExitsZeroWithTheFlagsOnStdout(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-h"}, &out, &errOut); code != 0 || errOut.Len() != 0 {
		t.Fatalf("-h: exit %d, stderr %q", code, errOut.String())
	}
	for _, f := range []string{"-dsn", "-test", "-c ", "-d ", "-notify", "-rows", "-copy", "-async", "-rate", "-n "} {
		if !strings.Contains(out.String(), "  "+f) {
			t.Errorf("-h output lacks %q:\n%s", f, out.String())
		}
	}
}
