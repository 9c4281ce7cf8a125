package devdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the role initdb creates; the broker connects as it over the private socket.
const Superuser = "meshbroker"

// socketPort names the socket file (.s.PGSQL.<port>). The cluster listens on no TCP port,
// so any number works and no free port has to be found.
const socketPort = 5432

// Options configure Start.
type Options struct {
	// DataDir is the cluster's data directory; initdb runs there when it holds no cluster.
	DataDir string
	// Database is created if missing; the URL of the cluster points at it. Default "meshbroker".
	Database string
	// NoFsync trades durability for speed (test clusters only).
	NoFsync bool
	// MaxConnections is postgres' max_connections; 0 keeps the server default (100).
	MaxConnections int
	// StartTimeout bounds initdb plus start-up. Default 60 s.
	StartTimeout time.Duration
	Logger       *slog.Logger
}

// Cluster is a running local Postgres.
type Cluster struct {
	dataDir   string
	socketDir string
	database  string
	logPath   string
	binDir    string
	runAs     *credential
	opts      Options
	log       *slog.Logger

	// cmd is the postmaster we started; nil when we attached to a cluster already running
	// (another broker process, or `broker admin` beside a running broker), which we must
	// then leave running.
	cmd    *exec.Cmd
	exited chan struct{}
}

type credential struct {
	name     string
	uid, gid uint32
}

// Start makes sure a cluster runs in opts.DataDir and that opts.Database exists in it:
// it runs initdb on an empty directory, starts postgres, or attaches to the postgres that
// already runs there.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Database == "" {
		opts.Database = "meshbroker"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	binDir, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir %q: %w", opts.DataDir, err)
	}
	c := &Cluster{
		dataDir:  dataDir,
		database: opts.Database,
		logPath:  filepath.Join(filepath.Dir(dataDir), filepath.Base(dataDir)+".log"),
		binDir:   binDir,
		opts:     opts,
		log:      opts.Logger.With("data_dir", dataDir),
	}
	if os.Geteuid() == 0 {
		if c.runAs, err = unprivilegedUser(); err != nil {
			return nil, err
		}
	}

	// Another process (a broker, `broker admin`) may be starting or stopping the same
	// cluster at this moment: attach to a postmaster that runs, and if ours lost the race
	// for the lock file to one that then went away, try again.
	for attempt := 1; ; attempt++ {
		err := c.startOrAttach(ctx)
		if err == nil {
			break
		}
		if attempt == 3 || ctx.Err() != nil {
			return nil, err
		}
		c.log.Info("embedded postgres busy (another process is starting or stopping it); retrying", "err", err)
		c.cmd, c.socketDir = nil, ""
		time.Sleep(time.Duration(attempt) * 500 * time.Millisecond)
	}
	if err := c.ensureDatabase(ctx); err != nil {
		_ = c.Stop(context.Background())
		return nil, err
	}
	return c, nil
}

// startOrAttach attaches to the postmaster running in the data directory, or initializes
// and starts one, and waits until it accepts connections.
func (c *Cluster) startOrAttach(ctx context.Context) error {
	if pid, sockDir, ok := runningPostmaster(c.dataDir); ok {
		c.socketDir = sockDir
		c.log.Info("embedded postgres already running; attaching", "pid", pid)
		return c.waitReady(ctx)
	}
	if err := c.initIfEmpty(ctx); err != nil {
		return err
	}
	if err := c.startPostmaster(ctx); err != nil {
		return err
	}
	err := c.waitReady(ctx)
	if err == nil {
		return nil
	}
	// Our postmaster may have exited on the lock file of one started a moment before:
	// attach to the winner.
	if pid, sockDir, ok := runningPostmaster(c.dataDir); ok && pid != c.cmd.Process.Pid {
		c.cmd, c.socketDir = nil, sockDir
		c.log.Info("embedded postgres started by another process; attaching", "pid", pid)
		return c.waitReady(ctx)
	}
	_ = c.Stop(context.Background())
	return err
}

// URL returns a connection URL for the cluster's database.
func (c *Cluster) URL() string { return c.URLFor(c.database) }

// URLFor returns a connection URL for another database of the same cluster.
func (c *Cluster) URLFor(database string) string {
	q := url.Values{}
	q.Set("host", c.socketDir)
	q.Set("port", strconv.Itoa(socketPort))
	q.Set("sslmode", "disable")
	return (&url.URL{Scheme: "postgres", User: url.User(Superuser), Path: "/" + database, RawQuery: q.Encode()}).String()
}

// Owned reports whether this process started the postmaster (and so stops it).
func (c *Cluster) Owned() bool { return c.cmd != nil }

// DataDir returns the absolute data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// Stop shuts the postmaster down if this process started it: a fast shutdown (SIGINT,
// in-flight transactions roll back, data is flushed), escalating to an immediate one and
// then SIGKILL if it does not finish within ctx or 20 s.
func (c *Cluster) Stop(ctx context.Context) error {
	if c.cmd == nil {
		return nil
	}
	select {
	case <-c.exited:
		return nil
	default:
	}
	deadline := 20 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = max(time.Until(d), time.Second)
	}
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{
		{syscall.SIGINT, deadline * 3 / 4}, // fast shutdown
		{syscall.SIGQUIT, deadline / 4},    // immediate shutdown (crash recovery on next start)
		{syscall.SIGKILL, 5 * time.Second},
	}
	for _, s := range steps {
		_ = c.cmd.Process.Signal(s.sig)
		select {
		case <-c.exited:
			c.log.Info("embedded postgres stopped", "signal", s.sig.String())
			return nil
		case <-time.After(s.wait):
		}
	}
	return fmt.Errorf("embedded postgres (pid %d) did not exit", c.cmd.Process.Pid)
}

// Kill stops the postmaster abruptly (immediate shutdown: no checkpoint, crash recovery on
// the next start), as losing the database would look to the broker:
// tests use it to cut the database off under a running broker.
func (c *Cluster) Kill() error {
	if c.cmd == nil {
		return errors.New("cluster not started by this process")
	}
	_ = c.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-c.exited:
		return nil
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return nil
	}
}

// Restart starts the postmaster again after Stop or Kill, with the same socket.
func (c *Cluster) Restart(ctx context.Context) error {
	if c.cmd != nil {
		select {
		case <-c.exited:
		default:
			return errors.New("cluster is still running")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	if err := c.startPostmaster(ctx); err != nil {
		return err
	}
	return c.waitReady(ctx)
}

func (c *Cluster) initIfEmpty(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); err == nil {
		return nil
	}
	if entries, err := os.ReadDir(c.dataDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("data dir %s is not empty and holds no PostgreSQL cluster (no PG_VERSION); "+
			"point BROKER_DATA_DIR at an empty or missing directory", c.dataDir)
	}
	// Parents 0755 so the unprivileged postgres user can traverse them; the data dir itself
	// 0700, as postgres requires.
	if err := os.MkdirAll(filepath.Dir(c.dataDir), 0o755); err != nil {
		return fmt.Errorf("create data dir parent: %w", err)
	}
	if err := os.Mkdir(c.dataDir, 0o700); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := c.chown(c.dataDir); err != nil {
		return err
	}
	c.log.Info("initializing embedded postgres cluster", "bin_dir", c.binDir)
	args := []string{
		"-D", c.dataDir, "-U", Superuser,
		"--auth=trust", // reachable only through a 0700 socket directory: see startPostmaster
		"--encoding=UTF8", "--locale=C",
	}
	if c.opts.NoFsync {
		args = append(args, "--no-sync")
	}
	out, err := c.command(ctx, filepath.Join(c.binDir, "initdb"), args...).CombinedOutput()
	if err != nil {
		hint := ""
		if c.runAs != nil {
			hint = fmt.Sprintf(" (as root the cluster runs as user %q, which must be able to reach %s: "+
				"pick a BROKER_DATA_DIR outside private home directories)", c.runAs.name, c.dataDir)
		}
		return fmt.Errorf("initdb failed%s: %w\n%s", hint, err, tail(out, 2000))
	}
	return nil
}

func (c *Cluster) startPostmaster(ctx context.Context) error {
	if err := c.prepareSocketDir(); err != nil {
		return err
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open postgres log: %w", err)
	}
	args := []string{
		"-D", c.dataDir,
		"-c", "listen_addresses=", // no TCP: the socket directory is the only way in
		"-c", "unix_socket_directories=" + c.socketDir,
		"-c", "unix_socket_permissions=0700",
		"-c", "port=" + strconv.Itoa(socketPort),
	}
	if c.opts.NoFsync {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	if c.opts.MaxConnections > 0 {
		args = append(args, "-c", "max_connections="+strconv.Itoa(c.opts.MaxConnections))
	}
	// Not CommandContext: the postmaster must outlive the start-up deadline.
	cmd := c.command(context.Background(), filepath.Join(c.binDir, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so a Ctrl-C in the terminal reaches the broker (which then drains
	// and stops postgres in order) rather than postgres directly. Pdeathsig stops postgres
	// if the broker dies without stopping it.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGINT
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	logf.Close()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c.cmd, c.exited = cmd, exited
	c.log.Info("embedded postgres starting", "pid", cmd.Process.Pid, "socket_dir", c.socketDir, "log", c.logPath)
	return nil
}

// prepareSocketDir picks a private directory for the socket: "<data dir>.run" beside the
// data directory, or a fresh temporary directory when that path is too long for a unix
// socket (108 bytes on Linux, 104 on macOS).
func (c *Cluster) prepareSocketDir() error {
	if c.socketDir != "" {
		return nil
	}
	dir := c.dataDir + ".run"
	if len(dir)+len("/.s.PGSQL.5432.lock") > 100 {
		tmp, err := os.MkdirTemp("", "mbpg")
		if err != nil {
			return fmt.Errorf("socket dir: %w", err)
		}
		dir = tmp
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("socket dir: %w", err)
	}
	if err := c.chown(dir); err != nil {
		return err
	}
	c.socketDir = dir
	return nil
}

func (c *Cluster) waitReady(ctx context.Context) error {
	for {
		conn, err := pgx.Connect(ctx, c.URLFor("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		if c.cmd != nil {
			select {
			case <-c.exited:
				log, _ := os.ReadFile(c.logPath)
				return fmt.Errorf("embedded postgres exited during start-up; its log %s ends:\n%s", c.logPath, tail(log, 2000))
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("embedded postgres not ready: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) ensureDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.URLFor("postgres"))
	if err != nil {
		return fmt.Errorf("connect to embedded postgres: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", c.database).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", c.database, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{c.database}.Sanitize()); err != nil {
		var again bool
		// Lost a race with another process creating it: fine.
		if qerr := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", c.database).Scan(&again); qerr == nil && again {
			return nil
		}
		return fmt.Errorf("create database %s: %w", c.database, err)
	}
	return nil
}

// command builds an exec.Cmd that runs as the unprivileged user when we are root.
func (c *Cluster) command(ctx context.Context, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = filepath.Dir(c.dataDir)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if c.runAs != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: c.runAs.uid, Gid: c.runAs.gid, NoSetGroups: true}
	}
	return cmd
}

func (c *Cluster) chown(path string) error {
	if c.runAs == nil {
		return nil
	}
	if err := os.Chown(path, int(c.runAs.uid), int(c.runAs.gid)); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, c.runAs.name, err)
	}
	return nil
}

func unprivilegedUser() (*credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &credential{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root, and Postgres refuses to run as root: create a 'postgres' user " +
		"(useradd -r postgres) or run the broker as an ordinary user, or set DATABASE_URL")
}

// runningPostmaster reads <dataDir>/postmaster.pid and reports the live postmaster's pid and
// socket directory, if one runs.
func runningPostmaster(dataDir string) (pid int, socketDir string, ok bool) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, "", false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 5 {
		return 0, "", false
	}
	pid, err = strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		return 0, "", false
	}
	// Signal 0 checks existence. EPERM means it exists but belongs to someone else.
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0, "", false
	}
	socketDir = strings.TrimSpace(lines[4])
	if socketDir == "" {
		return 0, "", false
	}
	return pid, socketDir, true
}

func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
