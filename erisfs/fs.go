package erisfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"time"

	"erismount/eris"
)

// FS is a read-only io/fs view of a Tree: it implements fs.FS,
// fs.ReadDirFS, fs.ReadFileFS, fs.StatFS and fs.ReadLinkFS. Files are
// 0444, executables 0555, directories 0555, symlinks 0777; every time is
// the Unix time 1, as in a Nix or Guix store.
//
// Symlinks are followed by Open, Stat and ReadDir as a kernel would, but
// only within the tree: an absolute target, or one that climbs above the
// root, gives an error matching ErrOutsideTree. Lstat and ReadLink do not
// follow them.
//
// The root "." of a single-file tree is that file (or symlink) itself:
// Stat(".") describes it, Open(".") reads it, ReadDir(".") fails.
type FS struct {
	ctx context.Context
	t   *Tree
}

// ErrOutsideTree means a symlink points outside the tree (an absolute
// target, or one climbing above the root): the FS view cannot follow it.
var ErrOutsideTree = errors.New("symlink points outside the tree")

// maxFollow bounds the symlinks one path resolution follows (Linux's
// limit, ELOOP beyond).
const maxFollow = 40

// FS returns the io/fs view of t. ctx bounds the block fetches of every
// operation on the view and its files.
func (t *Tree) FS(ctx context.Context) *FS { return &FS{ctx: ctx, t: t} }

var (
	_ fs.FS         = (*FS)(nil)
	_ fs.ReadDirFS  = (*FS)(nil)
	_ fs.ReadFileFS = (*FS)(nil)
	_ fs.StatFS     = (*FS)(nil)
	_ fs.ReadLinkFS = (*FS)(nil)
)

// resolve finds the entry at name, following symlinks in directories on
// the way and, if follow, in the last component.
func (f *FS) resolve(op, name string, follow bool) (*Entry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	fail := func(err error) (*Entry, error) { return nil, &fs.PathError{Op: op, Path: name, Err: err} }
	e := f.t.root
	var rest []string
	if name != "." {
		rest = strings.Split(name, "/")
	}
	hops := 0
	for {
		if len(rest) == 0 {
			if follow && e.kind == Symlink {
				// Only the root of a single-file tree gets here: its
				// target is relative to a directory outside the tree.
				return fail(ErrOutsideTree)
			}
			return e, nil
		}
		comp := rest[0]
		rest = rest[1:]
		switch comp {
		case "", ".":
			continue
		case "..":
			if e.parent == nil {
				return fail(ErrOutsideTree)
			}
			e = e.parent
			continue
		}
		if e.kind != Directory {
			return fail(fmt.Errorf("%w (%s is a %v)", fs.ErrNotExist, displayPath(e.Path()), e.kind))
		}
		c := e.Child(comp)
		if c == nil {
			return fail(fs.ErrNotExist)
		}
		if c.kind != Symlink || (len(rest) == 0 && !follow) {
			e = c
			continue
		}
		hops++
		if hops > maxFollow {
			return fail(fmt.Errorf("too many levels of symbolic links"))
		}
		if strings.HasPrefix(c.target, "/") {
			return fail(fmt.Errorf("%w: %s -> %s", ErrOutsideTree, displayPath(c.Path()), c.target))
		}
		// The target replaces the link, relative to the link's directory.
		rest = append(strings.Split(c.target, "/"), rest...)
	}
}

// Open opens the named file or directory, following symlinks.
func (f *FS) Open(name string) (fs.File, error) {
	e, err := f.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	if e.kind == Directory {
		return &dirFile{fsys: f, e: e, name: name}, nil
	}
	r, err := f.t.Open(f.ctx, e)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &file{fsys: f, e: e, name: name, r: r}, nil
}

// Stat describes the named file, following symlinks.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	e, err := f.resolve("stat", name, true)
	if err != nil {
		return nil, err
	}
	return f.info("stat", name, e)
}

// Lstat describes the named file without following a final symlink.
func (f *FS) Lstat(name string) (fs.FileInfo, error) {
	e, err := f.resolve("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return f.info("lstat", name, e)
}

// ReadLink returns the target of the named symlink.
func (f *FS) ReadLink(name string) (string, error) {
	e, err := f.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	if e.kind != Symlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fmt.Errorf("%w: not a symlink", fs.ErrInvalid)}
	}
	return e.target, nil
}

// ReadDir lists the named directory sorted by name, following symlinks.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	e, err := f.resolve("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if e.kind != Directory {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fmt.Errorf("not a directory (a %v)", e.kind)}
	}
	return f.dirEntries(e.children), nil
}

// ReadFile returns the content of the named file, fetching its blocks
// concurrently.
func (f *FS) ReadFile(name string) ([]byte, error) {
	e, err := f.resolve("readfile", name, true)
	if err != nil {
		return nil, err
	}
	if !e.kind.IsFile() {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: fmt.Errorf("%w: is a %v", fs.ErrInvalid, e.kind)}
	}
	b, err := f.t.ReadFile(f.ctx, e)
	if err != nil {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: err}
	}
	return b, nil
}

func (f *FS) dirEntries(es []*Entry) []fs.DirEntry {
	out := make([]fs.DirEntry, len(es))
	for i, e := range es {
		out[i] = dirEntry{fsys: f, e: e}
	}
	return out
}

// info returns e's FileInfo, fetching a file's size if not yet known.
func (f *FS) info(op, name string, e *Entry) (fs.FileInfo, error) {
	n, err := f.t.Size(f.ctx, e)
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	fi := fileInfo{e: e, size: n, name: e.name}
	if e.parent == nil {
		fi.name = "."
	}
	return fi, nil
}

// fileInfo describes an entry. Sys returns the *Entry.
type fileInfo struct {
	e    *Entry
	name string
	size int64
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) Mode() fs.FileMode  { return i.e.Mode() }
func (i fileInfo) ModTime() time.Time { return time.Unix(1, 0) }
func (i fileInfo) IsDir() bool        { return i.e.kind == Directory }
func (i fileInfo) Sys() any           { return i.e }

// dirEntry is an entry of a directory listing; Info fetches a file's size.
type dirEntry struct {
	fsys *FS
	e    *Entry
}

func (d dirEntry) Name() string               { return d.e.name }
func (d dirEntry) IsDir() bool                { return d.e.kind == Directory }
func (d dirEntry) Type() fs.FileMode          { return d.e.Mode().Type() }
func (d dirEntry) Info() (fs.FileInfo, error) { return d.fsys.info("stat", d.e.Path(), d.e) }
func (d dirEntry) String() string             { return fs.FormatDirEntry(d) }

// file is an open regular or executable file. It keeps the last window of
// content it read, so that the small reads of a Read loop do not each
// fetch and decrypt a whole ERIS block again (the eris Reader caches
// internal nodes, not leaves).
type file struct {
	fsys   *FS
	e      *Entry
	name   string
	r      *eris.Reader
	off    int64 // Read and Seek position
	closed bool

	mu     sync.Mutex
	win    []byte // content at winOff
	winOff int64
	winEOF bool // win ends at the end of the content
}

// window is the span file reads at once for small reads: at least one ERIS
// block, 64 KiB for 1 KiB blocks.
func (f *file) window() int { return max(f.e.cap.BlockSize(), 64<<10) }

var (
	_ io.ReaderAt = (*file)(nil)
	_ io.Seeker   = (*file)(nil)
)

func (f *file) Stat() (fs.FileInfo, error) {
	if f.closed {
		return nil, &fs.PathError{Op: "stat", Path: f.name, Err: fs.ErrClosed}
	}
	return f.fsys.info("stat", f.name, f.e)
}

func (f *file) Read(p []byte) (int, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrClosed}
	}
	n, err := f.readAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrClosed}
	}
	return f.readAt(p, off)
}

// readAt serves small reads from the window, refilling it as needed, and
// large ones straight from the reader.
func (f *file) readAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	w := int64(f.window())
	if int64(len(p)) >= w {
		return f.r.ReadAtContext(f.fsys.ctx, p, off)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for n < len(p) {
		at := off + int64(n)
		if at < f.winOff || at >= f.winOff+int64(len(f.win)) {
			if f.winEOF && at >= f.winOff+int64(len(f.win)) && at-f.winOff < w {
				return n, io.EOF
			}
			start := at / w * w
			if f.win == nil {
				f.win = make([]byte, w)
			}
			m, err := f.r.ReadAtContext(f.fsys.ctx, f.win[:w], start)
			f.win, f.winOff, f.winEOF = f.win[:m], start, err == io.EOF
			if err != nil && err != io.EOF {
				f.win = f.win[:0]
				return n, err
			}
			if at >= start+int64(m) {
				return n, io.EOF
			}
		}
		n += copy(p[n:], f.win[at-f.winOff:])
	}
	return n, nil
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrClosed}
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		size, err := f.fsys.t.Size(f.fsys.ctx, f.e)
		if err != nil {
			return 0, &fs.PathError{Op: "seek", Path: f.name, Err: err}
		}
		offset += size
	default:
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrInvalid}
	}
	if offset < 0 {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrInvalid}
	}
	f.off = offset
	return offset, nil
}

func (f *file) Close() error {
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	return nil
}

// dirFile is an open directory.
type dirFile struct {
	fsys   *FS
	e      *Entry
	name   string
	off    int
	closed bool
}

var _ fs.ReadDirFile = (*dirFile)(nil)

func (d *dirFile) Stat() (fs.FileInfo, error) {
	if d.closed {
		return nil, &fs.PathError{Op: "stat", Path: d.name, Err: fs.ErrClosed}
	}
	return d.fsys.info("stat", d.name, d.e)
}

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: errors.New("is a directory")}
}

// ReadDir returns the next n entries (all remaining if n <= 0), with io.EOF
// once none remain and n > 0, as fs.ReadDirFile requires.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if d.closed {
		return nil, &fs.PathError{Op: "readdir", Path: d.name, Err: fs.ErrClosed}
	}
	rest := d.e.children[d.off:]
	if n > 0 {
		if len(rest) == 0 {
			return nil, io.EOF
		}
		rest = rest[:min(n, len(rest))]
	}
	d.off += len(rest)
	return d.fsys.dirEntries(rest), nil
}

func (d *dirFile) Close() error {
	if d.closed {
		return &fs.PathError{Op: "close", Path: d.name, Err: fs.ErrClosed}
	}
	d.closed = true
	return nil
}
