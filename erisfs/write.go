package erisfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// ErrExists means WriteDir's destination already exists: it never
// overwrites anything.
var ErrExists = errors.New("destination exists")

// WriteOptions configure WriteDir. The zero value is useful.
type WriteOptions struct {
	// Concurrency is the number of files written at once (their blocks
	// fetched in parallel); 0 means 8.
	Concurrency int
	// Progress, if set, is called with the content bytes written so far.
	// It is called from the writing goroutines, one call at a time.
	Progress func(done int64)
}

// WriteDir writes the tree out to dest on disk, which must not exist:
// files 0444, executables 0555, directories 0555 (set once their contents
// are written), symlinks created as they are and never followed. Every
// block is verified as it is read. The tree is written into a temporary
// entry beside dest and renamed to dest at the end, refusing to replace
// anything there (ErrExists); on any error or a cancelled ctx the
// temporary entry is removed and dest does not appear. A single-file tree
// makes dest that file or symlink.
func (t *Tree) WriteDir(ctx context.Context, dest string, opts WriteOptions) (err error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	dest = filepath.Clean(dest)
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("erisfs: write %s: %w", dest, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("erisfs: write: %w", err)
	}
	var suffix [8]byte
	rand.Read(suffix[:])
	tmp := filepath.Join(filepath.Dir(dest), "."+filepath.Base(dest)+".erismount-"+hex.EncodeToString(suffix[:])+".tmp")
	defer func() {
		if err != nil {
			if rmErr := RemoveTree(tmp); rmErr != nil {
				err = fmt.Errorf("%w (and removing %s: %v)", err, tmp, rmErr)
			}
		}
	}()

	w := &writer{t: t, root: tmp, progress: opts.Progress}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	// In Ino order every directory is made before its contents.
	for e := range t.All() {
		if err := gctx.Err(); err != nil {
			break
		}
		p := w.path(e)
		switch e.kind {
		case Directory:
			// Writable while it fills; 0555 at the end.
			if err := os.Mkdir(p, 0o700); err != nil {
				g.Wait()
				return fmt.Errorf("erisfs: write: %w", err)
			}
		case Symlink:
			if err := os.Symlink(e.target, p); err != nil {
				g.Wait()
				return fmt.Errorf("erisfs: write: %w", err)
			}
		default:
			g.Go(func() error { return w.file(gctx, e, p) })
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Directories read-only, innermost first.
	for _, e := range slices.Backward(t.all) {
		if e.kind == Directory {
			if err := os.Chmod(w.path(e), 0o555); err != nil {
				return fmt.Errorf("erisfs: write: %w", err)
			}
		}
	}
	if err := renameNoReplace(tmp, dest); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("erisfs: write %s: %w", dest, ErrExists)
		}
		return fmt.Errorf("erisfs: write: %w", err)
	}
	return nil
}

type writer struct {
	t        *Tree
	root     string
	progress func(int64)
	done     atomic.Int64
	mu       sync.Mutex // serializes progress calls
}

// path is where e goes under the temporary root. Names were validated by
// Open: no "/", "." or "..", so nothing leaves the root, and every parent
// is a directory this writer made.
func (w *writer) path(e *Entry) string {
	if e.parent == nil {
		return w.root
	}
	return filepath.Join(w.root, filepath.FromSlash(e.Path()))
}

// file writes a file's content, verified block by block, then makes it
// read-only.
func (w *writer) file(ctx context.Context, e *Entry, p string) error {
	r, err := w.t.Open(ctx, e)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("erisfs: write: %w", err)
	}
	n, err := r.WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("erisfs: write %s: %w", displayPath(e.Path()), err)
	}
	if err := os.Chmod(p, e.Mode().Perm()); err != nil {
		return fmt.Errorf("erisfs: write: %w", err)
	}
	if w.progress != nil {
		w.mu.Lock()
		w.progress(w.done.Add(n))
		w.mu.Unlock()
	}
	return nil
}

// RemoveTree removes the tree at p — a partly or wholly written tree whose
// directories may already be read-only (0555, as store items and WriteDir
// leave them) — first making its directories writable, never following
// symlinks. A missing p is not an error.
func RemoveTree(p string) error {
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
