package nar

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
)

// WalkFunc is called by Walk for each node. For regular and executable
// files r yields exactly h.Size bytes (an error if the file changed size
// while it was read); it is nil for other types and valid only during the
// call.
type WalkFunc func(h *Header, r io.Reader) error

// Walk visits the tree of fsys in nar order: the root "." first, a
// directory before its entries, entries sorted by name in byte order. It
// never follows symlinks: node types come from fs.Lstat and ReadDir,
// symlink targets from fs.ReadLink (so fsys must implement fs.ReadLinkFS
// for trees that hold symlinks). A file is executable when any 0100 bit of
// its mode is set. Other file types, invalid or duplicate names and
// nesting deeper than MaxDepth are errors, as is a cancelled ctx.
func Walk(ctx context.Context, fsys fs.FS, fn WalkFunc) error {
	fi, err := fs.Lstat(fsys, ".")
	if err != nil {
		return fmt.Errorf("nar: %w", err)
	}
	return walk(ctx, fsys, ".", "", fi.Mode().Type(), 0, fn)
}

// WriteFS writes the tree of fsys to w as a nar (see Walk for what is
// read, and how).
func WriteFS(ctx context.Context, w io.Writer, fsys fs.FS) error {
	nw := NewWriter(w)
	err := Walk(ctx, fsys, func(h *Header, r io.Reader) error {
		if err := nw.WriteHeader(h); err != nil {
			return err
		}
		if r != nil {
			_, err := io.Copy(nw, r)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return nw.Close()
}

// walk visits the node at name (fs path) whose nar path is path.
func walk(ctx context.Context, fsys fs.FS, name, path string, typ fs.FileMode, depth int, fn WalkFunc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case typ.IsRegular():
		return walkFile(ctx, fsys, name, path, fn)
	case typ&fs.ModeSymlink != 0:
		target, err := fs.ReadLink(fsys, name)
		if err != nil {
			return fmt.Errorf("nar: %w", err)
		}
		if err := validTarget(target); err != nil {
			return fmt.Errorf("nar: %s: %w", name, err)
		}
		return fn(&Header{Path: path, Type: Symlink, LinkTarget: target}, nil)
	case typ.IsDir():
		if depth >= MaxDepth {
			return fmt.Errorf("nar: %s: directories nested deeper than %d", name, MaxDepth)
		}
		entries, err := fs.ReadDir(fsys, name)
		if err != nil {
			return fmt.Errorf("nar: %w", err)
		}
		slices.SortFunc(entries, func(a, b fs.DirEntry) int { return cmp.Compare(a.Name(), b.Name()) })
		for i, e := range entries {
			if err := ValidName(e.Name()); err != nil {
				return fmt.Errorf("nar: directory %s: %w", name, err)
			}
			if i > 0 && entries[i-1].Name() == e.Name() {
				return fmt.Errorf("nar: directory %s: duplicate entry %q", name, e.Name())
			}
		}
		if err := fn(&Header{Path: path, Type: Directory}, nil); err != nil {
			return err
		}
		for _, e := range entries {
			child := e.Name()
			if name != "." {
				child = name + "/" + child
			}
			if err := walk(ctx, fsys, child, join(path, e.Name()), e.Type(), depth+1, fn); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("nar: %s: unsupported file type %v", name, typ)
}

func walkFile(ctx context.Context, fsys fs.FS, name, path string, fn WalkFunc) error {
	f, err := fsys.Open(name)
	if err != nil {
		return fmt.Errorf("nar: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("nar: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("nar: %s: no longer a regular file (%v)", name, fi.Mode().Type())
	}
	h := &Header{Path: path, Type: Regular, Size: fi.Size()}
	if fi.Mode()&0o100 != 0 {
		h.Type = Executable
	}
	fr := &fileReader{ctx: ctx, f: f, name: name, remain: h.Size}
	if err := fn(h, fr); err != nil {
		return err
	}
	if fr.remain == 0 && fr.err == nil {
		// fn read exactly Size bytes (io.LimitReader never asks for
		// more): check that the file ends there.
		fr.Read(nil)
	}
	if fr.err != nil && fr.err != io.EOF { // fn may have swallowed it
		return fr.err
	}
	return nil
}

// ErrChanged means a file's size changed while it was being read.
var ErrChanged = errors.New("file changed while being read")

// fileReader yields exactly remain bytes of f, then checks that f ends
// there.
type fileReader struct {
	ctx    context.Context
	f      fs.File
	name   string
	remain int64
	err    error
}

func (r *fileReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if err := r.ctx.Err(); err != nil {
		r.err = err
		return 0, err
	}
	if r.remain == 0 {
		var one [1]byte
		n, err := r.f.Read(one[:])
		switch {
		case n > 0:
			r.err = fmt.Errorf("nar: %s: %w (grew)", r.name, ErrChanged)
		case err == io.EOF:
			r.err = io.EOF
		case err != nil:
			r.err = fmt.Errorf("nar: read %s: %w", r.name, err)
		default:
			return 0, nil
		}
		return 0, r.err
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.f.Read(p)
	r.remain -= int64(n)
	if err == io.EOF && r.remain > 0 {
		err = fmt.Errorf("nar: %s: %w (shrank)", r.name, ErrChanged)
	} else if err == io.EOF {
		err = nil
	} else if err != nil {
		err = fmt.Errorf("nar: read %s: %w", r.name, err)
	}
	if err != nil {
		r.err = err
	}
	return n, err
}
