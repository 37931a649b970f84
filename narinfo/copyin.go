package narinfo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"erismount/erisfs"
	"erismount/narinfo/nar"
)

var (
	// ErrExists means the store item is already there; CopyIn never
	// overwrites.
	ErrExists = errors.New("store item already exists")
	// ErrMismatch is matched by the error CopyIn returns when what it
	// wrote does not serialize to the expected NarHash and NarSize.
	ErrMismatch = errors.New("content does not match the signed NarHash/NarSize")
	// ErrStoreDir is matched by the error CopyIn returns when the signed
	// store path names another store directory than the one copied into.
	ErrStoreDir = errors.New("store path of another store directory")
)

// StoreDirError reports a signed store path whose store directory is not
// the one copied into: an item signed for /srv/other must not land in
// /gnu/store, whatever its content.
type StoreDirError struct {
	StorePath string // as signed
	StoreDir  string // copied into
}

func (e *StoreDirError) Error() string {
	return fmt.Sprintf("narinfo: the signed StorePath %s is in the store directory %s, not in %s", e.StorePath, path.Dir(e.StorePath), e.StoreDir)
}

// Is makes a StoreDirError match ErrStoreDir.
func (e *StoreDirError) Is(target error) bool { return target == ErrStoreDir }

// ExitCode makes a command exit with 4 (verification failed): the
// signature covers the store path.
func (e *StoreDirError) ExitCode() int { return 4 }

// checkStoreDir checks that storePath, when it is a full store path, lies
// in storeDir: the same directory, or that directory under another root
// (/tmp/root/gnu/store for /gnu/store, a store being prepared elsewhere).
// A base name alone names no store directory.
func checkStoreDir(storeDir, storePath string) error {
	if !path.IsAbs(storePath) {
		return nil
	}
	dir, _, err := SplitStorePath(storePath)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(storeDir)
	if err != nil {
		return fmt.Errorf("narinfo: store directory %s: %w", storeDir, err)
	}
	if abs == dir || dir != "/" && strings.HasSuffix(abs, dir) {
		return nil
	}
	return &StoreDirError{StorePath: storePath, StoreDir: storeDir}
}

// MismatchError reports a copy whose nar differs from the expected one.
type MismatchError struct {
	StorePath string
	Want      nar.Sum
	// Got is the nar of what was written; when the copy was stopped for
	// exceeding Want.Size, Got.Hash is zero and Got.Size is where it
	// stopped.
	Got nar.Sum
}

func (e *MismatchError) Error() string {
	if e.Got.Hash.IsZero() {
		return fmt.Sprintf("hash mismatch for %s: content exceeds the signed NarSize %d (stopped at %d bytes)", e.StorePath, e.Want.Size, e.Got.Size)
	}
	return fmt.Sprintf("hash mismatch for %s: the narinfo says %s, the content is %s", e.StorePath, e.Want, e.Got)
}

// Is makes a MismatchError match ErrMismatch.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// CopyInOptions configure CopyIn. The zero value is useful.
type CopyInOptions struct {
	// Logger receives a line per copy; nil discards.
	Logger *slog.Logger
	// Progress, if set, is called from time to time with the number of
	// nar bytes produced so far (out of the expected NarSize).
	Progress func(done int64)
}

// The canonical metadata of a store item (spec §4.1).
const (
	fileMode = 0o444
	execMode = 0o555
	dirMode  = 0o555
)

// canonicalTime is the mtime (and atime) of everything in a store: 1 s
// after the epoch.
var canonicalTime = []unix.Timespec{{Sec: 1}, {Sec: 1}}

// CopyIn materializes the tree of fsys as the store item storePath (a full
// store path or a base name) in the directory storeDir, and checks it
// against want, the signed NarHash and NarSize. A full store path must be
// in storeDir, or in that store directory under another root
// (/tmp/root/gnu/store for /gnu/store/…); else CopyIn refuses with a
// *StoreDirError (ErrStoreDir) before writing anything.
//
// It writes into a fresh temporary entry next to the destination, with
// the metadata of a store item (files 0444, executables 0555, directories
// 0555 set after their contents, mtime 1, symlinks created and never
// followed), computing the nar serialization of exactly the bytes it
// writes as it goes. Only if that nar's hash and size equal want does it
// rename the entry to its store path, refusing to replace anything there
// (ErrExists). On a mismatch (an error matching ErrMismatch), a failure of
// fsys (a corrupt or missing block), a cancelled ctx or any other error,
// the temporary entry is removed and nothing appears in storeDir.
//
// fsys is read as package nar walks it: symlinks never followed, entries
// in byte order, executables by any 0100 bit.
func CopyIn(ctx context.Context, fsys fs.FS, storeDir, storePath string, want nar.Sum, opts CopyInOptions) (err error) {
	if err := checkStoreDir(storeDir, storePath); err != nil {
		return err
	}
	base := path.Base(storePath)
	if err := CheckBaseName(base); err != nil {
		return err
	}
	if want.Size <= 0 || want.Hash.IsZero() {
		return fmt.Errorf("narinfo: copy-in %s: no NarHash/NarSize to check against", base)
	}
	final := filepath.Join(storeDir, base)
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("narinfo: copy-in %s: %w", final, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("narinfo: copy-in: %w", err)
	}
	var suffix [8]byte
	rand.Read(suffix[:])
	c := &copier{
		root:     filepath.Join(storeDir, "."+base+".erismount-"+hex.EncodeToString(suffix[:])+".tmp"),
		want:     want,
		base:     base,
		progress: opts.Progress,
	}
	c.hw = nar.NewHashingWriter(nil)
	c.nw = nar.NewWriter(c.hw)
	defer func() {
		if err != nil {
			if rmErr := erisfs.RemoveTree(c.root); rmErr != nil {
				err = fmt.Errorf("%w (and removing %s: %v)", err, c.root, rmErr)
			}
		}
	}()
	if err := nar.Walk(ctx, fsys, c.visit); err != nil {
		return fmt.Errorf("narinfo: copy-in %s: %w", base, err)
	}
	if err := c.nw.Close(); err != nil {
		return fmt.Errorf("narinfo: copy-in %s: %w", base, err)
	}
	if got := c.hw.Sum(); got != want {
		return &MismatchError{StorePath: base, Want: want, Got: got}
	}
	// Directories last and innermost first (reverse creation order): a
	// directory's mode and time are final only once nothing more is
	// created in it.
	for _, d := range slices.Backward(c.dirs) {
		if err := os.Chmod(d, dirMode); err != nil {
			return fmt.Errorf("narinfo: copy-in: %w", err)
		}
		if err := setTime(d); err != nil {
			return err
		}
	}
	if err := renameNoReplace(c.root, final); err != nil {
		return fmt.Errorf("narinfo: copy-in %s: %w", final, err)
	}
	if opts.Logger != nil {
		opts.Logger.Info("copied in", "path", final, "nar", want)
	}
	return nil
}

type copier struct {
	root     string // the temporary entry
	base     string
	want     nar.Sum
	hw       *nar.HashingWriter
	nw       *nar.Writer
	dirs     []string
	progress func(int64)
	buf      []byte
}

func (c *copier) visit(h *nar.Header, r io.Reader) error {
	if err := c.nw.WriteHeader(h); err != nil {
		return err
	}
	if err := c.checkSize(); err != nil {
		return err
	}
	p := c.root
	if h.Path != "" {
		p = filepath.Join(c.root, filepath.FromSlash(h.Path))
	}
	switch h.Type {
	case nar.Directory:
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		c.dirs = append(c.dirs, p)
		return nil
	case nar.Symlink:
		if err := os.Symlink(h.LinkTarget, p); err != nil {
			return err
		}
		return setTime(p)
	}
	// O_EXCL|O_NOFOLLOW: a name that exists, or is a symlink, is never
	// written through.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if c.buf == nil {
		c.buf = make([]byte, 256<<10)
	}
	for {
		n, rerr := r.Read(c.buf)
		if n > 0 {
			if _, err := f.Write(c.buf[:n]); err != nil {
				return err
			}
			if _, err := c.nw.Write(c.buf[:n]); err != nil {
				return err
			}
			if err := c.checkSize(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	mode := os.FileMode(fileMode)
	if h.Type == nar.Executable {
		mode = execMode
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return setTime(p)
}

// checkSize stops a copy as soon as it is larger than the signed size, and
// reports progress.
func (c *copier) checkSize() error {
	n := c.nw.Size()
	if n > c.want.Size {
		return &MismatchError{StorePath: c.base, Want: c.want, Got: nar.Sum{Size: n}}
	}
	if c.progress != nil {
		c.progress(n)
	}
	return nil
}

func setTime(p string) error {
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, canonicalTime, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "utimensat", Path: p, Err: err}
	}
	return nil
}

// renameNoReplace renames atomically unless newpath exists.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return ErrExists
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
		// A file system without RENAME_NOREPLACE: check, then rename
		// (racy only against another writer of the same item).
		if _, err := os.Lstat(newpath); err == nil {
			return ErrExists
		}
		return os.Rename(oldpath, newpath)
	}
	return &os.LinkError{Op: "renameat2", Old: oldpath, New: newpath, Err: err}
}

// ExitCode makes a command exit with 4 (verification failed).
func (e *MismatchError) ExitCode() int { return 4 }
