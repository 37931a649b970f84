package fusefs

import (
	"context"
	"fmt"
	"syscall"

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

// countLocal counts the blocks of e held locally and the blocks it has
// (erisfs.Tree.Held): of a file its content, of a directory every distinct
// content below it, and on the root the tree's index too. A nil e is the
// synthetic root of a single-file tree.
func (m *mountFS) countLocal(ctx context.Context, e *erisfs.Entry) (have, total int64, err error) {
	if e == nil {
		e = m.tree.Root()
	}
	h, err := m.tree.Held(ctx, e, m.opts.Local, m.opts.Local.Has)
	return h.Blocks, h.TotalBlocks, err
}
