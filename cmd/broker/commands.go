package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// A command is one level of the command line: a group of subcommands, or a leaf with flags,
// positional arguments and a run func. Usage, help (`--help`, `-h` or `help` at any level)
// and validation are derived from this table, so a new subcommand is one more entry: its
// run func is called only with every required flag and argument present and nothing else,
// and nothing has opened the database before it (a usage error never touches it).
type command struct {
	name    string
	aliases []string // other words that select this command; not listed in usage
	summary string   // one line, in the usage of the groups above it
	about   string   // a leaf's longer description, in its own usage; default: summary
	dflt    string   // a group's subcommand when none is given ("" = one is required)
	subs    []*command
	args    []argDef  // a leaf's positional arguments, all required, in order
	flags   []flagDef // a leaf's flags, in the order usage lists them
	run     func(c *call) error
}

// argDef is a positional argument: its placeholder (N) and meaning.
type argDef struct{ name, meaning string }

// flagDef is a string flag: --name VALUE, its one-line meaning, and either required or a
// default (def, shown in usage when not empty).
type flagDef struct {
	name, value, meaning string
	required             bool
	def                  string
}

// call is one run of a leaf: its flags (set or defaulted) and positional arguments.
type call struct {
	path           string // "admin member add"
	usage          string
	flags          map[string]string
	args           []string
	stdout, stderr io.Writer
}

// flag returns the value of a flag of the leaf's table entry.
func (c *call) flag(name string) string {
	v, ok := c.flags[name]
	if !ok {
		panic("cmd/broker: --" + name + " is not a flag of " + c.path)
	}
	return v
}

// usageErr is a usage error of this leaf (exit 2, the leaf's usage on stderr).
func (c *call) usageErr(format string, a ...any) error {
	return usageError{msg: c.path + ": " + fmt.Sprintf(format, a...), usage: c.usage}
}

// usageError marks a malformed command line: exit status 2, the message and the usage of
// the command it was meant for on stderr.
type usageError struct{ msg, usage string }

func (e usageError) Error() string { return e.msg }

func isHelp(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "--help" || arg == "-help"
}

// dispatch walks down the table along args to a leaf and runs it. Help goes to stdout and
// returns nil.
func dispatch(root *command, args []string, stdout, stderr io.Writer) error {
	cmd, path := root, []string{}
	for cmd.run == nil {
		if len(args) == 0 {
			if cmd.dflt == "" {
				var names []string
				for _, s := range cmd.subs {
					names = append(names, strings.TrimSpace(s.name+" "+argNames(s.args)))
				}
				return usageError{msg: fmt.Sprintf("%s needs a subcommand: %s", strings.Join(path, " "), orList(names)),
					usage: cmd.usage(path)}
			}
			args = []string{cmd.dflt}
		}
		if isHelp(args[0]) {
			if args[0] == "help" { // help [COMMAND …]: that command's usage
				for _, word := range args[1:] {
					next := cmd.sub(word)
					if next == nil {
						return cmd.unknown(path, word)
					}
					cmd, path = next, append(path, next.name)
					if next.run != nil {
						break
					}
				}
			}
			fmt.Fprint(stdout, cmd.usage(path))
			return nil
		}
		next := cmd.sub(args[0])
		if next == nil {
			return cmd.unknown(path, args[0])
		}
		cmd, path, args = next, append(path, next.name), args[1:]
	}
	c, err := cmd.parse(path, args, stdout, stderr)
	if err != nil || c == nil {
		return err // a usage error, or help printed
	}
	return cmd.run(c)
}

func (cmd *command) sub(word string) *command {
	for _, s := range cmd.subs {
		if s.name == word || slices.Contains(s.aliases, word) {
			return s
		}
	}
	return nil
}

func (cmd *command) unknown(path []string, word string) error {
	msg := fmt.Sprintf("unknown command %q", word)
	if len(path) > 0 {
		msg = fmt.Sprintf("unknown %s subcommand %q", strings.Join(path, " "), word)
	}
	return usageError{msg: msg, usage: cmd.usage(path)}
}

// parse checks a leaf's command line: unknown flags, stray arguments, every missing required
// flag at once, missing arguments. It returns a nil call after printing help.
func (cmd *command) parse(path, args []string, stdout, stderr io.Writer) (*call, error) {
	c := &call{path: strings.Join(path, " "), usage: cmd.usage(path), flags: map[string]string{},
		stdout: stdout, stderr: stderr}
	if len(args) > 0 && args[0] == "help" {
		fmt.Fprint(stdout, c.usage)
		return nil, nil
	}
	fs := flag.NewFlagSet(c.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	values := map[string]*string{}
	for _, f := range cmd.flags {
		values[f.name] = fs.String(f.name, f.def, f.meaning)
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, c.usage)
		return nil, nil
	} else if err != nil {
		return nil, c.usageErr("%v", err)
	}
	if fs.NArg() > len(cmd.args) {
		return nil, c.usageErr("unexpected argument %q", fs.Arg(len(cmd.args)))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var missing []string
	for _, f := range cmd.flags {
		if f.required && !set[f.name] {
			missing = append(missing, "--"+f.name)
		}
	}
	switch len(missing) {
	case 0:
	case 1:
		return nil, c.usageErr("missing required flag: %s", missing[0])
	default:
		return nil, c.usageErr("missing required flags: %s", strings.Join(missing, ", "))
	}
	if fs.NArg() < len(cmd.args) {
		return nil, c.usageErr("missing argument %s", cmd.args[fs.NArg()].name)
	}
	for name, v := range values {
		c.flags[name] = *v
	}
	c.args = fs.Args()
	return c, nil
}

// usage is the text `broker PATH --help` prints: a leaf's synopsis, description, arguments
// and flags; a group's description and every command below it.
func (cmd *command) usage(path []string) string {
	var b strings.Builder
	full := strings.Join(append([]string{"broker"}, path...), " ")
	if cmd.run != nil {
		fmt.Fprintf(&b, "usage: %s\n\n", strings.TrimSpace(full+" "+cmd.synopsis()))
		about := cmd.about
		if about == "" {
			about = upperFirst(cmd.summary) + "."
		}
		fmt.Fprintf(&b, "%s\n", wrap(about, 90))
		if len(cmd.args) > 0 {
			rows := [][2]string{}
			for _, a := range cmd.args {
				rows = append(rows, [2]string{a.name, a.meaning})
			}
			fmt.Fprintf(&b, "\narguments:\n%s", table(rows))
		}
		if len(cmd.flags) > 0 {
			rows := [][2]string{}
			for _, f := range cmd.flags {
				meaning := f.meaning
				switch {
				case f.required:
					meaning += " (required)"
				case f.def != "":
					meaning += " (default " + f.def + ")"
				}
				rows = append(rows, [2]string{"--" + f.name + " " + f.value, meaning})
			}
			fmt.Fprintf(&b, "\nflags:\n%s", table(rows))
		}
		return b.String()
	}
	if len(path) == 0 {
		fmt.Fprintf(&b, "usage: broker [COMMAND]\n\n%s.\n\ncommands:\n", upperFirst(cmd.summary))
	} else {
		fmt.Fprintf(&b, "usage: %s COMMAND\n\n%s.\n\ncommands:\n", full, upperFirst(cmd.summary))
	}
	var rows [][2]string
	var walk func(c *command, p []string)
	walk = func(c *command, p []string) {
		if c.run != nil {
			name := strings.Join(p, " ")
			if len(c.args) > 0 {
				name += " " + argNames(c.args)
			}
			summary := c.summary
			if len(path) == 0 && strings.Join(p, " ") == cmd.dflt {
				summary += " (the default)"
			}
			rows = append(rows, [2]string{name, summary})
			return
		}
		for _, s := range c.subs {
			walk(s, append(slices.Clip(p), s.name))
		}
	}
	walk(cmd, slices.Clip(path))
	if len(path) == 0 {
		rows = append(rows, [2]string{"help [COMMAND]", "print the usage of broker or of a command"})
	}
	b.WriteString(table(rows))
	fmt.Fprintf(&b, "\n`%s COMMAND --help` prints a command's flags.\n", full)
	if len(path) == 0 {
		b.WriteString(`
Configuration is read from the environment; see README.md. Without DATABASE_URL every
command uses the local Postgres cluster in BROKER_DATA_DIR (started, or attached to when a
broker runs on it). Exit status: 0 on success, 1 on a runtime failure, 2 on bad usage, bad
input or bad configuration (a message on stderr, nothing on stdout).
`)
	}
	return b.String()
}

// synopsis is a leaf's arguments and flags as the usage line shows them.
func (cmd *command) synopsis() string {
	var parts []string
	for _, f := range cmd.flags {
		if f.required {
			parts = append(parts, "--"+f.name+" "+f.value)
		}
	}
	for _, f := range cmd.flags {
		if !f.required {
			parts = append(parts, "[--"+f.name+" "+f.value+"]")
		}
	}
	if len(cmd.args) > 0 {
		parts = append(parts, argNames(cmd.args))
	}
	return strings.Join(parts, " ")
}

func argNames(args []argDef) string {
	var names []string
	for _, a := range args {
		names = append(names, a.name)
	}
	return strings.Join(names, " ")
}

// orList joins "a", "b", "c" as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// table prints two columns, the second aligned.
func table(rows [][2]string) string {
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, r[0], r[1])
	}
	return b.String()
}

// wrap breaks text into lines of at most width characters at spaces.
func wrap(text string, width int) string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		line = strings.TrimSpace(line + " " + w)
	}
	return strings.Join(append(lines, line), "\n")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
