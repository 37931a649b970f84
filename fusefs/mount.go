package fusefs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"erismount/erisfs"
)

// fuseName is our FUSE subtype: mounts show as type fuseType.
const (
	fuseName = "erismount"
	fuseType = "fuse." + fuseName
)

var (
	// ErrNoFUSE means the kernel's FUSE device is missing or cannot be
	// opened, and no fusermount3 helper could mount instead.
	ErrNoFUSE = errors.New("FUSE unavailable")
	// ErrBusy means the mount point is in use: already a mount point, or
	// (on unmount) files below it are still open.
	ErrBusy = errors.New("mount point busy")
	// ErrNotEmpty means the mount point holds files that the mount would
	// hide, and Options.NonEmpty was not set.
	ErrNotEmpty = errors.New("mount point not empty")
)

// Server is a mounted tree, served until it is unmounted.
type Server struct {
	dir    string
	srv    *fuse.Server
	m      *mountFS
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Mount mounts tree read-only at dir, which must be an existing directory
// that is not a mount point already, and empty unless opts.NonEmpty, and
// serves it in the background. It
// mounts with the mount(2) system call when it may (root, or a user
// namespace that allows it), else through fusermount3. ctx bounds
// background work such as readahead; the mount itself lasts until
// Unmount or Close, or until someone unmounts dir.
func Mount(ctx context.Context, dir string, tree *erisfs.Tree, opts Options) (*Server, error) {
	abs, err := CheckMountPoint(dir, opts.NonEmpty)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	m := newMountFS(ctx, tree, opts)
	s, err := serve(abs, m.root(), m, tree.Capability().URN(), true, cancel)
	if err != nil {
		return nil, err
	}
	m.log.Debug("mounted", "dir", abs, "urn", tree.Capability().URN(), "entries", tree.Len())
	return s, nil
}

// serve mounts root at abs as the file system fsName and serves it in the
// background; cancel ends m's background work once it is unmounted.
// readdirPlus lets the kernel ask for READDIRPLUS: listings that carry the
// attributes of the entries whose attributes are known without a fetch
// (dirHandle.Lookup), sparing a LOOKUP of each subdirectory a walk enters.
// The store view leaves it off: looking its items up opens them.
func serve(abs string, root gofs.InodeEmbedder, m *mountFS, fsName string, readdirPlus bool, cancel context.CancelFunc) (*Server, error) {
	long := cacheTimeout
	fopts := &gofs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther: m.opts.AllowOther,
			// default_permissions: the kernel checks the modes itself
			// (they never change), sparing an ACCESS request per check.
			Options:          []string{"ro", "default_permissions"},
			FsName:           fsName,
			Name:             fuseName,
			DirectMount:      true,
			DirectMountFlags: syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY,
			MaxWrite:         maxRead,
			MaxReadAhead:     maxRead,
			// Kernel readahead requests are "background" ones; allow
			// more of them in flight than go-fuse's default of 12.
			MaxBackground:        64,
			IgnoreSecurityLabels: true,
			// Listing a directory never fetches the size of a file
			// in it: with READDIRPLUS, files whose size is not known
			// yet go without attributes (see dirHandle.Lookup).
			DisableReadDirPlus:       !readdirPlus,
			EnableSymlinkCaching:     true,
			ExplicitDataCacheControl: true,
			Debug:                    m.opts.Debug,
			Logger:                   slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
		},
		EntryTimeout:    &long,
		AttrTimeout:     &long,
		NegativeTimeout: &long,
		RootStableAttr:  &gofs.StableAttr{Ino: 1},
		UID:             m.uid,
		GID:             m.gid,
		Logger:          log.New(&logWriter{m.log}, "", 0),
	}
	srv, err := gofs.Mount(abs, root, fopts)
	if err != nil {
		cancel()
		return nil, mountError(abs, err)
	}
	s := &Server{dir: abs, srv: srv, m: m, cancel: cancel, done: make(chan struct{})}
	go func() {
		srv.Wait()
		cancel()
		close(s.done)
	}()
	return s, nil
}

// Dir is the absolute path of the mount point.
func (s *Server) Dir() string { return s.dir }

// Stats returns what the mount has done so far.
func (s *Server) Stats() Stats { return s.m.st.snapshot() }

// Done is closed when the mount has ended, by Unmount, Close, or an
// unmount from outside (fusermount3 -u, umount).
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait blocks until the mount has ended.
func (s *Server) Wait() { <-s.done }

// Unmount unmounts the tree and waits until it is no longer served. While
// files below it are open it fails with an error matching ErrBusy and the
// mount stays.
func (s *Server) Unmount() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	if err := s.srv.Unmount(); err != nil {
		select {
		case <-s.done: // unmounted meanwhile, from outside
			return nil
		default:
		}
		if isBusy(s.dir) {
			return fmt.Errorf("fusefs: unmount %s: %w (files are open below it)", s.dir, ErrBusy)
		}
		return fmt.Errorf("fusefs: unmount %s: %w", s.dir, err)
	}
	<-s.done
	return nil
}

// Close unmounts the tree; if files below it are still open it detaches
// it lazily instead (MNT_DETACH, or fusermount3 -u -z), so the directory is
// free at once, and returns. A detached tree is served to its open files
// until the kernel lets go of the last of them (they are all closed), when
// Done is closed; or until this process exits, when they fail with ENOTCONN.
// Close is idempotent.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		if err = s.Unmount(); err == nil {
			return
		}
		s.m.log.Info("unmount failed, detaching lazily", "dir", s.dir, "err", err)
		err = Detach(s.dir)
	})
	return err
}

// Detach lazily unmounts whatever is mounted at dir: syscall.Unmount with
// MNT_DETACH when permitted, else fusermount3 -u -z. It is the last resort
// of Close and of tests' cleanups.
func Detach(dir string) error {
	err := syscall.Unmount(dir, syscall.MNT_DETACH)
	if err == nil || errors.Is(err, syscall.EINVAL) && !IsMountPoint(dir) {
		return nil
	}
	for _, bin := range []string{"fusermount3", "fusermount"} {
		path, lerr := exec.LookPath(bin)
		if lerr != nil {
			continue
		}
		out, ferr := exec.Command(path, "-u", "-z", dir).CombinedOutput()
		if ferr == nil {
			return nil
		}
		err = fmt.Errorf("%v; %s -u -z: %v: %s", err, bin, ferr, strings.TrimSpace(string(out)))
	}
	return fmt.Errorf("fusefs: detach %s: %w", dir, err)
}

// CheckMountPoint returns dir as an absolute path after checking that it
// is an existing directory, not already a mount point, empty unless
// nonEmpty (a mount would hide what is there: ErrNotEmpty), and that FUSE
// is there, each with an error a user can act on. Mount does the same; a
// command calls it first to fail before any work.
func CheckMountPoint(dir string, nonEmpty bool) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("fusefs: mount point %s: %w", dir, err)
	}
	// A mount of ours whose process died (killed, crashed) answers
	// nothing but ENOTCONN (statfs always asks the server; stat may be
	// answered from the kernel's cache): nobody can use it, so clear it
	// and mount afresh.
	if mountType(abs) == fuseType {
		var st syscall.Statfs_t
		if err := syscall.Statfs(abs, &st); errors.Is(err, syscall.ENOTCONN) {
			if derr := Detach(abs); derr != nil {
				return "", fmt.Errorf("fusefs: mount point %s: %w: the mount of a dead erismount is still there and could not be detached: %v", abs, ErrBusy, derr)
			}
			return CheckMountPoint(dir, nonEmpty)
		}
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("fusefs: mount point %s does not exist (create it with mkdir): %w", abs, fs.ErrNotExist)
	case errors.Is(err, syscall.ENOTCONN):
		return "", fmt.Errorf("fusefs: mount point %s: %w: a dead FUSE mount is still there (fusermount3 -u %s)", abs, ErrBusy, abs)
	case err != nil:
		return "", fmt.Errorf("fusefs: mount point %s: %w", abs, err)
	case !fi.IsDir():
		return "", fmt.Errorf("fusefs: mount point %s is not a directory", abs)
	}
	if IsMountPoint(abs) {
		return "", fmt.Errorf("fusefs: mount point %s: %w: something is mounted there already (fusermount3 -u %s)", abs, ErrBusy, abs)
	}
	if !nonEmpty {
		if name, err := firstName(abs); err != nil {
			return "", fmt.Errorf("fusefs: mount point %s: %w", abs, err)
		} else if name != "" {
			return "", fmt.Errorf("fusefs: mount point %s is not empty (it holds %q): the mount would hide what is there: %w", abs, name, ErrNotEmpty)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return "", fmt.Errorf("fusefs: %w: /dev/fuse: %v (load the fuse module, or in a container pass --device /dev/fuse)", ErrNoFUSE, err)
	}
	return abs, nil
}

// firstName returns the name of an entry of directory dir, "" if empty.
func firstName(dir string) (string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return "", err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return names[0], nil
	}
	if err == io.EOF {
		err = nil
	}
	return "", err
}

// mountError explains why go-fuse could not mount.
func mountError(dir string, err error) error {
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("fusefs: mount %s: %w: %v", dir, ErrBusy, err)
	}
	if _, lerr := exec.LookPath("fusermount3"); lerr != nil {
		if _, lerr := exec.LookPath("fusermount"); lerr != nil {
			return fmt.Errorf("fusefs: mount %s: %w: mount(2) failed and no fusermount3 helper is installed (Debian: apt install fuse3): %v", dir, ErrNoFUSE, err)
		}
	}
	return fmt.Errorf("fusefs: mount %s: %w: %v", dir, ErrNoFUSE, err)
}

// IsMountPoint reports whether something is mounted at dir (an absolute,
// clean path), according to /proc/self/mountinfo.
func IsMountPoint(dir string) bool { return mountType(dir) != "" }

// mountType is the file system type of the topmost mount at dir ("" if
// none), from /proc/self/mountinfo: ours is "fuse.erismount".
func mountType(dir string) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	typ := ""
	for sc.Scan() {
		// ID parent major:minor root mountpoint options [optional…] - type source superoptions
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != dir {
			continue
		}
		typ = "?"
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				typ = fields[i+1]
				break
			}
		}
	}
	return typ
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, …) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			ok := true
			for _, d := range []byte(s[i+1 : i+4]) {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				c = c*8 + d - '0'
			}
			if ok {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isBusy reports whether dir is still mounted after a failed unmount.
func isBusy(dir string) bool { return IsMountPoint(dir) }

// logWriter passes go-fuse's diagnostics (log.Logger lines) to slog.
type logWriter struct{ l *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	w.l.Warn("go-fuse: " + strings.TrimSpace(string(p)))
	return len(p), nil
}
