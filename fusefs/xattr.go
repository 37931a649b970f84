package fusefs

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	"golang.org/x/sync/errgroup"

	"erismount/eris"
	"erismount/erisfs"
)

// Extended attributes of the mount (all read-only).
const (
	// XattrURN is the capability of a file's content, or on the mount
	// root the capability of the whole tree: what to pass to erismount
	// to get it elsewhere.
	XattrURN = "user.eris.urn"
	// XattrLocal says how many of the blocks of a file, or of everything
	// below a directory (the root adds the tree's index), are held
	// locally: "F L/T" with F the fraction L/T to four decimals, rounded
	// down, so "1.0000" means every block is here and it will read
	// offline.
	XattrLocal = "user.eris.local"
)

// localConcurrency bounds the files whose blocks user.eris.local counts at
// once.
const localConcurrency = 8

// urnOf is the capability user.eris.urn shows for e (nil: the synthetic
// root of a single-file tree), or the zero capability if e has none.
func (m *mountFS) urnOf(e *erisfs.Entry) eris.ReadCapability {
	switch {
	case e == nil || e == m.tree.Root() && e.IsDir():
		return m.tree.Capability()
	case e.Kind().IsFile():
		return e.Capability()
	}
	return eris.ReadCapability{}
}

// hasLocal reports whether e has a user.eris.local attribute.
func (m *mountFS) hasLocal(e *erisfs.Entry) bool {
	return m.opts.Local != nil && (e == nil || e.Kind() != erisfs.Symlink)
}

func (m *mountFS) listxattr(e *erisfs.Entry, dest []byte) (uint32, syscall.Errno) {
	var list []byte
	if !m.urnOf(e).IsZero() {
		list = append(list, XattrURN+"\x00"...)
	}
	if m.hasLocal(e) {
		list = append(list, XattrLocal+"\x00"...)
	}
	return xattrValue(list, dest)
}

func (m *mountFS) getxattr(ctx context.Context, e *erisfs.Entry, attr string, dest []byte) (uint32, syscall.Errno) {
	switch attr {
	case XattrURN:
		rc := m.urnOf(e)
		if rc.IsZero() {
			return 0, syscall.ENODATA
		}
		return xattrValue([]byte(rc.URN()), dest)
	case XattrLocal:
		if !m.hasLocal(e) {
			return 0, syscall.ENODATA
		}
		var have, total int64
		err := m.do(ctx, func(ctx context.Context) error {
			var err error
			have, total, err = m.countLocal(ctx, e)
			return err
		}, nil)
		if err != nil {
			return 0, m.errno("getxattr "+XattrLocal, e, err)
		}
		return xattrValue([]byte(formatLocal(have, total)), dest)
	}
	return 0, syscall.ENODATA
}

// xattrValue answers a getxattr or listxattr: the size when dest is empty,
// ERANGE when it is too small.
func xattrValue(v, dest []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// formatLocal is the user.eris.local value. The fraction is rounded down:
// it reads 1 only when every block is here.
func formatLocal(have, total int64) string {
	if total <= 0 {
		return "1.0000 0/0"
	}
	f := have * 10000 / total
	return fmt.Sprintf("%d.%04d %d/%d", f/10000, f%10000, have, total)
}

// countLocal counts the blocks of e held locally and the blocks it has:
// of a file its content, of a directory every distinct content below it,
// and on the root the tree's index too.
func (m *mountFS) countLocal(ctx context.Context, e *erisfs.Entry) (have, total int64, err error) {
	type content struct {
		rc   eris.ReadCapability
		e    *erisfs.Entry // nil: the index, of known size
		size int64
	}
	var todo []content
	seen := make(map[eris.ReadCapability]bool)
	var walk func(e *erisfs.Entry)
	walk = func(e *erisfs.Entry) {
		switch {
		case e.IsDir():
			for c := range e.All() {
				walk(c)
			}
		case e.Kind().IsFile() && !seen[e.Capability()]:
			seen[e.Capability()] = true
			todo = append(todo, content{rc: e.Capability(), e: e})
		}
	}
	if e == nil || e == m.tree.Root() && e.IsDir() {
		todo = append(todo, content{rc: m.tree.Capability(), size: int64(m.tree.IndexSize())})
		e = m.tree.Root()
	}
	walk(e)

	var nhave, ntotal atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(localConcurrency)
	for _, c := range todo {
		g.Go(func() error {
			size := c.size
			if c.e != nil {
				var err error
				if size, err = m.contentSize(ctx, c.e); err != nil {
					return err
				}
			}
			h, err := countHeld(ctx, m.opts.Local, c.rc)
			if err != nil {
				return err
			}
			nhave.Add(h)
			ntotal.Add(blockCount(c.rc, size))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	return nhave.Load(), ntotal.Load(), nil
}

// contentSize is a file's size, from the local store when it holds the
// rightmost path of the content, else through the tree (which may fetch
// it): asking whether a file is here should not need the network when it is.
func (m *mountFS) contentSize(ctx context.Context, e *erisfs.Entry) (int64, error) {
	if n, ok := e.CachedSize(); ok {
		return n, nil
	}
	r, err := eris.NewReader(ctx, e.Capability(), m.opts.Local)
	if err != nil {
		return 0, err
	}
	if n, err := r.SizeContext(ctx); err == nil {
		return n, nil
	} else if !errors.Is(err, eris.ErrNotFound) {
		return 0, err
	}
	return m.tree.Size(ctx, e)
}

// countHeld counts the blocks of rc that l holds, walking the tree through
// the internal nodes l has. Below an internal node l lacks nothing more is
// counted (eris.Walk stops there), so the count is exact when everything is
// held and a lower bound otherwise.
func countHeld(ctx context.Context, l Local, rc eris.ReadCapability) (int64, error) {
	var n int64
	err := eris.Walk(ctx, rc, l, func(ref eris.Ref, level int) error {
		ok, err := l.Has(ctx, ref)
		if err != nil {
			return err
		}
		if ok {
			n++
		}
		return nil
	})
	if err != nil && !errors.Is(err, eris.ErrNotFound) {
		return 0, err
	}
	return n, nil
}

// blockCount is how many blocks content of size bytes has under rc: the
// leaves of the padded content (padding always adds at least one byte,
// spec §2.2) and the internal nodes of every level up to rc's root.
func blockCount(rc eris.ReadCapability, size int64) int64 {
	bs := int64(rc.BlockSize())
	arity := bs / 64
	n := size/bs + 1
	total := n
	for range rc.Level() {
		n = (n + arity - 1) / arity
		total += n
	}
	return total
}
