package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"erismount/fusefs"
)

// runNamespaceEnv marks the process erismount run starts in a new mount
// namespace (see runOutside); its value is the store directory.
const runNamespaceEnv = "ERISMOUNT_RUN_NAMESPACE"

// exitStatus is the exit status of a program erismount ran: erismount
// exits with it, saying nothing more.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitStatus) ExitCode() int { return int(e) }

func newRunCmd(a *app) *cobra.Command {
	var f storeFlags
	cmd := &cobra.Command{
		Use:   "run [flags] STORE-PATH/bin/PROG [ARGS…]",
		Short: "Run a program of a store item without installing it: its store and closure mounted lazily, verified",
		Long: `Run PROG, a program of a store item (/nix/store/<hash>-<name>/bin/prog), in a
private mount namespace in which the store view of "erismount store" is
mounted over the store directory, so that the program and every store item it
uses resolve lazily, block by block, every block verified. Where the store
directory exists and holds items, the view lies below it (overlayfs, the real
store on top): items present locally are used as they are, the others come
from the view. Nothing is installed, and nothing is mounted outside the
namespace; the view is unmounted when the program ends.

Standard input, output and error are the program's; erismount exits with the
program's exit status (128+N if a signal N ended it). If erismount itself fails
before the program starts, it says why and exits 1–4 as every command does.
SIGTERM and SIGHUP are passed on to the program; the terminal's SIGINT and
SIGQUIT reach it directly.

Flags come before PROG; everything after PROG is the program's. --store-dir
defaults to the store directory of PROG. Narinfos come from --narinfo-dir
and/or --upstream substitute servers, as for "erismount store".

It needs root, or a kernel that lets users create user namespaces (then it
runs in one, mapped to your user) and mount FUSE in them (/dev/fuse readable
and writable by you) and overlayfs (Linux 5.11 or later); unprivileged, the
store directory must exist (as root, a missing one is made for the run and
removed afterwards).`,
		Example: `  erismount run --narinfo-dir ./narinfo --trusted-nix-key publisher-1:… \
      --peer coap://192.0.2.7:5683 /nix/store/…-hello-2.12/bin/hello --greeting hi
  erismount run --upstream https://ci.guix.gnu.org --acl /etc/guix/acl \
      --peer coap://192.0.2.7:5683 /gnu/store/…-hello-2.12/bin/hello`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("run: give the program to run, STORE-PATH/bin/PROG")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Getenv(runNamespaceEnv) != "" {
				return a.runInNamespace(cmd.Context(), f, args)
			}
			return a.runOutside(f, args)
		},
	}
	cmd.Flags().SetInterspersed(false)
	f.add(cmd.Flags(), "", "store directory the view is mounted over (default: the one PROG is in)")
	return cmd
}

// runOutside checks what it can, then starts this same command again in a
// new mount namespace (and a user namespace when not root) and waits for it
// to run the program. A Go process cannot move all its threads into a new
// mount namespace, so the namespace is made when the child is cloned.
func (a *app) runOutside(f storeFlags, args []string) error {
	dir, _, err := storeDirOf(args[0])
	if err != nil {
		return usageError{err}
	}
	if f.storeDir == "" {
		f.storeDir = dir
	} else if f.storeDir != dir {
		return usageError{fmt.Errorf("%s is not in --store-dir %s", args[0], f.storeDir)}
	}
	if err := f.check(); err != nil {
		return err
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("run: %w: /dev/fuse: %v", fusefs.ErrNoFUSE, err)
	}
	root := os.Geteuid() == 0
	var made []string // store directory components made for the run
	if _, err := os.Stat(f.storeDir); errors.Is(err, fs.ErrNotExist) {
		if !root {
			return fmt.Errorf("run: store directory %s does not exist; without root it cannot be made for the run (mkdir -p %s as root)", f.storeDir, f.storeDir)
		}
		for d := f.storeDir; ; d = filepath.Dir(d) {
			if _, err := os.Stat(d); err == nil {
				break
			}
			made = append(made, d)
		}
		if err := os.MkdirAll(f.storeDir, 0o755); err != nil {
			return fmt.Errorf("run: make the store directory: %w", err)
		}
		a.log.Debug("made the store directory for the run", "dir", f.storeDir)
	}
	defer func() {
		for _, d := range made { // deepest first
			if err := os.Remove(d); err != nil {
				a.log.Warn("remove the store directory made for the run", "dir", d, "err", err)
			}
		}
	}()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), runNamespaceEnv+"="+f.storeDir)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.stdin, a.stdout, a.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	if !root {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
		cmd.SysProcAttr.GidMappingsEnableSetgroups = false
	}
	stop := passSignals(func() *os.Process { return cmd.Process })
	defer stop()
	if err := cmd.Start(); err != nil {
		if !root {
			return fmt.Errorf("run: start in a new user and mount namespace: %w (unprivileged user namespaces may be disabled: see erismount run --help)", err)
		}
		return fmt.Errorf("run: start in a new mount namespace: %w", err)
	}
	return statusOf(cmd.Wait())
}

// runInNamespace, in the private mount namespace, mounts the store view
// over the store directory, runs the program, and unmounts.
func (a *app) runInNamespace(ctx context.Context, f storeFlags, args []string) (err error) {
	f.storeDir = os.Getenv(runNamespaceEnv) // as runOutside found it
	// Nothing mounted here may show outside: mounts made outside still
	// show here.
	if err := syscall.Mount("none", "/", "", syscall.MS_REC|syscall.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("run: make / a slave mount: %w", err)
	}
	// The view serves until the program has ended, whatever signals
	// erismount gets meanwhile.
	ctx = context.WithoutCancel(ctx)
	ents, err := os.ReadDir(f.storeDir)
	if err != nil {
		return fmt.Errorf("run: store directory: %w", err)
	}
	viewDir := f.storeDir
	var tmp string
	if len(ents) > 0 {
		// The view goes below the real store: overlayfs over both, the
		// real store on top, read-only (no upper directory).
		if tmp, err = os.MkdirTemp("", "erismount-run-"); err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		viewDir = filepath.Join(tmp, "view")
		if err := os.Mkdir(viewDir, 0o755); err != nil {
			return err
		}
	}
	view, err := a.mountStoreView(ctx, viewDir, f)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, view.close()) }()
	if tmp != "" {
		opts := "lowerdir=" + overlayEscape(f.storeDir) + ":" + overlayEscape(viewDir)
		if os.Getuid() != 0 || !isInitUserNS() {
			opts += ",userxattr"
		}
		if err := syscall.Mount("overlay", f.storeDir, "overlay", syscall.MS_RDONLY|syscall.MS_NODEV|syscall.MS_NOSUID, opts); err != nil {
			return fmt.Errorf("run: overlay the store view below %s (%s): %w", f.storeDir, opts, err)
		}
		defer func() {
			if uerr := syscall.Unmount(f.storeDir, syscall.MNT_DETACH); uerr != nil {
				err = errors.Join(err, fmt.Errorf("run: unmount the overlay: %w", uerr))
			}
		}()
		a.log.Debug("store view overlaid", "store_dir", f.storeDir, "view", viewDir)
	}

	// Through /bin/sh: this process serves the view, and a forked child of
	// a Go process that opens a file of its parent's own FUSE mount
	// between fork and exec can deadlock the parent (golang/go#11155).
	cmd := exec.Command("/bin/sh", append([]string{"-c", `exec "$0" "$@"`}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.stdin, a.stdout, a.stderr
	cmd.Env = os.Environ()
	cmd.Env = slicesDeleteEnv(cmd.Env, runNamespaceEnv)
	stop := passSignals(func() *os.Process { return cmd.Process })
	defer stop()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run: start %s: %w", args[0], err)
	}
	err = statusOf(cmd.Wait())
	st := view.StoreStats()
	a.log.Debug("program ended", "status", err, "items_built", st.Built, "negative", st.Negative, "failed", st.Failed)
	return err
}

// statusOf turns the end of a child into erismount's own: nil, or the
// child's exit status (128+N for a signal N).
func statusOf(err error) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitStatus(128 + int(ws.Signal()))
	}
	return exitStatus(ee.ExitCode())
}

// passSignals passes SIGTERM and SIGHUP on to the process proc returns
// (once it has started), and keeps SIGINT and SIGQUIT, which a terminal
// sends the program itself, from ending erismount first. stop undoes it.
func passSignals(proc func() *os.Process) (stop func()) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case sig := <-ch:
				if sig == syscall.SIGINT || sig == syscall.SIGQUIT {
					continue
				}
				if p := proc(); p != nil {
					p.Signal(sig)
				}
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// overlayEscape escapes what overlayfs's mount options give a meaning to.
func overlayEscape(p string) string {
	return strings.NewReplacer(`\`, `\\`, ":", `\:`, ",", `\,`).Replace(p)
}

// isInitUserNS reports whether this process is in the initial user
// namespace (its uid map is the identity of the whole range).
func isInitUserNS() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b))
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}

// slicesDeleteEnv removes the variables named from env.
func slicesDeleteEnv(env []string, names ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, n := range names {
			if k == n {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}
