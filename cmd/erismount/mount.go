package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"erismount/eris"
	"erismount/erisfs"
	"erismount/fetcher"
	"erismount/fusefs"
)

// readyFDEnv names the descriptor on which a background child says that
// its tree is mounted (see mountBackground).
const readyFDEnv = "ERISMOUNT_READY_FD"

// mountFlags are the flags of the mount command.
type mountFlags struct {
	deadline   time.Duration
	allowOther bool
	foreground bool
	readahead  int
	treeAhead  int
	fileName   string
	debug      bool
	nonEmpty   bool
	node       nodeFlags
}

func newMountCmd(a *app) *cobra.Command {
	var f mountFlags
	cmd := &cobra.Command{
		Use:   "mount URN DIR",
		Short: "Mount a capability read-only at DIR, fetching blocks only as they are read",
		Long: `Mount the ERIS-FS tree named by URN read-only at DIR (an existing, empty
directory; --nonempty mounts over one that holds files, hiding them). Blocks are fetched only when read — from the block store (--store),
else from the peers (--peer) — verified, and kept in the store; the mounted
tree's index is pinned there while it is mounted, its files are evicted like
any cached blocks ("erismount pin" keeps a whole tree).

A read that needs blocks no peer delivers within --deadline fails with EIO
(the missing blocks are logged once); the mount stays usable. The extended
attributes user.eris.urn and user.eris.local tell what a file is and whether
all of it is here ("getfattr -n user.eris.local FILE": 1.0000 means it reads
offline).

It runs in the foreground until SIGINT or SIGTERM, then unmounts; if files
are still open below DIR it detaches the tree (DIR is free at once) and
serves those files until the last one is closed, then exits — a second
signal stops it at once, and the open files fail. "fusermount3 -u DIR"
also ends it. With
--foreground=false it returns once the tree is mounted and serves it in the
background.

"erismount URN DIR" is the same command.`,
		Example: `  erismount urn:eris:B4A… /mnt/hello --peer coap://192.0.2.7:5683
  erismount mount urn:eris:B4A… /mnt/hello --store ./blocks.sqlite --deadline 10s
  getfattr -n user.eris.local /mnt/hello/bin/hello`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !f.foreground && os.Getenv(readyFDEnv) == "" {
				return a.mountBackground(args[0], args[1])
			}
			return a.mount(cmd.Context(), args[0], args[1], f)
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&f.deadline, "deadline", fusefs.DefaultDeadline, "longest wait for the blocks of one file operation; past it the operation fails with EIO")
	fl.BoolVar(&f.allowOther, "allow-other", false, "let other users see the tree (non-root users need user_allow_other in /etc/fuse.conf)")
	fl.BoolVar(&f.foreground, "foreground", true, "serve in the foreground until SIGINT/SIGTERM (false: return once mounted)")
	fl.IntVar(&f.readahead, "readahead", fusefs.DefaultReadahead, "bytes to fetch ahead of a sequential reader of a file (0 turns it off)")
	fl.IntVar(&f.treeAhead, "tree-ahead", fusefs.DefaultTreeAhead, "bytes of the following files to fetch ahead of a reader that goes through the tree in order, as tar does; executables up to a quarter of it are fetched whole when opened (0 turns both off)")
	fl.StringVar(&f.fileName, "file-name", fusefs.DefaultFileName, "name of the file in DIR when the tree is a single file")
	fl.BoolVar(&f.debug, "debug-fuse", false, "log every FUSE request (with -v)")
	fl.BoolVar(&f.nonEmpty, "nonempty", false, "mount over a directory that holds files, hiding them while mounted (refused otherwise)")
	a.addMetricsFlag(cmd)
	a.addNodeFlags(cmd, &f.node)
	return cmd
}

// mount mounts the tree and serves it until a signal or an unmount.
func (a *app) mount(ctx context.Context, urn, dir string, f mountFlags) error {
	ph := newPhases()
	rc, err := parseURN(urn)
	if err != nil {
		return err
	}
	if f.deadline <= 0 {
		return usageError{fmt.Errorf("--deadline %v: want a positive duration", f.deadline)}
	}
	if f.readahead == 0 {
		f.readahead = -1 // fusefs: negative is off, 0 the default
	}
	if f.treeAhead == 0 {
		f.treeAhead = -1
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		// Before opening anything: the commonest mistake.
		if errors.Is(err, fs.ErrNotExist) {
			return usageError{fmt.Errorf("mount point %s does not exist (create it with mkdir -p %s)", dir, dir)}
		}
		if err == nil {
			return usageError{fmt.Errorf("mount point %s is not a directory", dir)}
		}
	}
	if _, err := fusefs.CheckMountPoint(dir, f.nonEmpty); errors.Is(err, fusefs.ErrNotEmpty) {
		return usageError{fmt.Errorf("%w (pass --nonempty to mount over it anyway)", err)}
	}
	ph.mark("check")
	src, err := a.openSource(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	ph.mark("open_source")
	node, listening, err := a.listenNode(ctx, src, f.node)
	if err != nil {
		return err
	}
	if node != nil {
		defer node.Close()
	}
	// While mounted, the tree's index is pinned — what browsing needs
	// offline — so the cache never evicts it. File contents are cached and
	// evicted like any other blocks: pinning them would let a tree larger
	// than the cache fill it ("erismount pin" keeps a whole tree).
	pin, err := src.Store.PinMount(ctx, rc.URN())
	if err != nil {
		return err
	}
	defer pin.Release(context.WithoutCancel(ctx))
	ph.mark("pin")

	// The index may be large: give opening it a dozen deadlines.
	octx, cancel := context.WithTimeout(ctx, 12*f.deadline)
	tree, err := erisfs.Open(octx, rc, src.Tiered, erisfs.OpenOptions{GetterVerifies: true})
	ph.mark("open_tree")
	if err == nil {
		err = eris.Walk(octx, rc, src.Tiered, func(ref eris.Ref, _ int) error { pin.Tag(ref); return nil })
	}
	cancel()
	if err != nil {
		return fmt.Errorf("open the tree: %w", err)
	}
	ph.mark("tag_index")
	// The mount outlives the first signal: a lazily detached tree serves
	// its open files until they are closed (see serveDetached).
	srv, err := fusefs.Mount(context.WithoutCancel(ctx), dir, tree, fusefs.Options{
		Deadline:   f.deadline,
		Local:      src.Store,
		Readahead:  f.readahead,
		TreeAhead:  f.treeAhead,
		FileName:   f.fileName,
		AllowOther: f.allowOther,
		Logger:     a.log,
		Debug:      f.debug,
		NonEmpty:   f.nonEmpty,
	})
	if err != nil {
		return err
	}
	ph.mark("fuse_mount")
	if a.metrics != "" {
		ms := &metricSources{tiered: src.Tiered.Stats, store: src.Store.Health, fuse: srv.Stats}
		if pool, ok := src.Remote.(*fetcher.Pool); ok {
			ms.peers = pool.Stats
		}
		if node != nil {
			ms.server = node.Stats
		}
		if _, err := a.serveMetrics(ctx, a.metrics, ms); err != nil {
			srv.Close()
			return err
		}
	}
	a.log.Info("mounted", append([]any{"urn", rc.URN(), "dir", srv.Dir(), "entries", tree.Len(), "index_bytes", tree.IndexSize()}, ph.attrs()...)...)
	if a.json {
		if err := a.printJSON(map[string]any{"urn": rc.URN(), "dir": srv.Dir(), "entries": tree.Len(), "pid": os.Getpid(), "listen": listening}); err != nil {
			srv.Close()
			return err
		}
	}
	signalReady()

	select {
	case <-ctx.Done():
		a.log.Info("unmounting", "dir", srv.Dir())
		if err := srv.Close(); err != nil {
			return err
		}
		if err := a.serveDetached(srv); err != nil {
			return err
		}
	case <-srv.Done():
		a.log.Info("unmounted from outside", "dir", srv.Dir())
	}
	st := srv.Stats()
	a.log.Info("mount ended", "reads", st.Reads, "read_bytes", st.ReadBytes, "eio", st.EIO, "timeouts", st.Timeouts)
	return nil
}

// phases times the steps of a mount, for its log: where the wait before
// the tree answers goes.
type phases struct {
	last  time.Time
	start time.Time
	names []string
	took  []time.Duration
}

func newPhases() *phases {
	now := time.Now()
	return &phases{start: now, last: now}
}

// mark ends the step called name.
func (p *phases) mark(name string) {
	now := time.Now()
	p.names = append(p.names, name)
	p.took = append(p.took, now.Sub(p.last))
	p.last = now
}

// attrs are the steps' durations as log attributes, and their total.
func (p *phases) attrs() []any {
	out := make([]any, 0, 2*len(p.names)+2)
	for i, n := range p.names {
		out = append(out, n, p.took[i].Round(10*time.Microsecond))
	}
	return append(out, "mount_took", p.last.Sub(p.start).Round(10*time.Microsecond))
}

// serveDetached waits, after Close, until a tree that Close had to detach
// lazily (files were open below it) is no longer used: the kernel ends
// the FUSE connection when the last open file is closed. Exiting sooner
// would break those files ("Transport endpoint is not connected") and any
// program running from the tree. A second SIGINT/SIGTERM stops at once.
func (a *app) serveDetached(srv *fusefs.Server) error {
	select {
	case <-srv.Done():
		return nil
	default:
	}
	a.log.Warn("files are open below the mount: detached it, serving them until they are closed (signal again to stop now)", "dir", srv.Dir())
	select {
	case <-srv.Done():
		a.log.Info("the last open file was closed", "dir", srv.Dir())
	case <-a.forced:
		a.log.Warn("stopping with files still open below the detached mount: they fail from now on", "dir", srv.Dir())
	}
	return nil
}

// signalReady tells the parent of a background mount that the tree is
// mounted, and stops the parent's pipes from mattering: once the parent
// has gone, writes to them fail instead of killing this process.
func signalReady() {
	fdText := os.Getenv(readyFDEnv)
	if fdText == "" {
		return
	}
	fd, err := strconv.Atoi(fdText)
	if err != nil {
		return
	}
	signal.Ignore(syscall.SIGPIPE)
	ready := os.NewFile(uintptr(fd), "ready")
	fmt.Fprintln(ready, "ready")
	ready.Close()
}

// mountBackground runs this same command again in the foreground as a
// detached child (its own session, so a terminal's signals do not reach
// it), waits until the child has mounted the tree, and returns; or returns
// the child's error output if it fails first.
func (a *app) mountBackground(urn, dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return err
	}
	defer errR.Close()
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.Stderr = errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		errW.Close()
		return err
	}
	readyW.Close()
	errW.Close()
	// The end of the child's log, kept to explain a failure. It is read
	// all along so that a chatty child never blocks on a full pipe.
	logged := make(chan string, 1)
	go func() {
		var tail tailBuffer
		io.Copy(&tail, errR)
		logged <- string(tail.b)
	}()
	line, _ := bufio.NewReader(readyR).ReadString('\n')
	if strings.TrimSpace(line) == "ready" {
		pid := cmd.Process.Pid
		a.log.Info("mounted in the background", "dir", dir, "pid", pid)
		if a.json {
			return a.printJSON(map[string]any{"urn": urn, "dir": dir, "pid": pid})
		}
		fmt.Fprintf(a.stderr, "erismount: mounted at %s (pid %d); unmount with: fusermount3 -u %s\n", dir, pid, dir)
		return cmd.Process.Release()
	}
	// The child ended without mounting: its error is on its stderr.
	werr := cmd.Wait()
	out := strings.TrimSpace(<-logged)
	out = strings.TrimPrefix(out, "erismount: ")
	if out == "" {
		out = fmt.Sprint(werr)
	}
	code := 1
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		code = ee.ExitCode()
	}
	return childError{msg: out, code: code}
}

// tailBuffer keeps the last 64 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - 64<<10; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

// childError is the failure of a background mount's child, keeping its
// exit code.
type childError struct {
	msg  string
	code int
}

func (e childError) Error() string { return e.msg }
func (e childError) ExitCode() int { return e.code }

// mountShorthand turns "erismount URN DIR [flags]" into "erismount mount
// URN DIR [flags]" before cobra parses anything, so that the mount
// command's own flags and context apply to the short form too.
func mountShorthand(root *cobra.Command, args []string) []string {
	if c, _, err := root.Find(args); err != nil || c != root {
		return args
	}
	for _, arg := range args {
		if arg == "--" {
			break
		}
		if strings.HasPrefix(strings.ToLower(arg), "urn:") {
			return append([]string{"mount"}, args...)
		}
	}
	return args
}
