package fusefs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"erismount/erisfs"
)

// dirNode is a directory of the tree. Its children become nodes only when
// the kernel looks them up. The root of a single-file tree is a synthetic
// directory (e == nil) holding that file under Options.FileName.
type dirNode struct {
	gofs.Inode
	entryNode
}

// child returns the entry called name, or nil.
func (d *dirNode) child(name string) *erisfs.Entry {
	if d.e == nil {
		if name == d.m.opts.FileName {
			return d.m.tree.Root()
		}
		return nil
	}
	return d.e.Child(name)
}

// children lists the directory's entries sorted by name.
func (d *dirNode) children() []*erisfs.Entry {
	if d.e == nil {
		return []*erisfs.Entry{d.m.tree.Root()}
	}
	return d.e.Children()
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c := d.child(name)
	if c == nil {
		return nil, syscall.ENOENT
	}
	size, errno := d.m.size(ctx, "lookup", c)
	if errno != 0 {
		return nil, errno
	}
	node, attr := d.m.node(c)
	d.m.fill(c, size, &out.Attr)
	return d.NewInode(ctx, node, attr), 0
}

func (d *dirNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if d.e == nil {
		out.Ino = 1
		out.Mode = syscall.S_IFDIR | 0o555
		out.Nlink = 2
		d.m.fillCommon(&out.Attr)
		return 0
	}
	d.m.fill(d.e, 0, &out.Attr)
	return 0
}

// OpendirHandle lists the directory once per open; the listing never
// changes, so the kernel may cache it (FOPEN_CACHE_DIR).
func (d *dirNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	self := uint64(1)
	if d.e != nil {
		self = d.m.ino(d.e)
	}
	parent := self
	if d.e != nil && d.e.Parent() != nil {
		parent = d.m.ino(d.e.Parent())
	}
	cs := d.children()
	list := make([]fuse.DirEntry, 0, len(cs)+2)
	list = append(list,
		fuse.DirEntry{Name: ".", Ino: self, Mode: syscall.S_IFDIR},
		fuse.DirEntry{Name: "..", Ino: parent, Mode: syscall.S_IFDIR})
	for _, c := range cs {
		name := c.Name()
		if d.e == nil {
			name = d.m.opts.FileName
		}
		list = append(list, fuse.DirEntry{Name: name, Ino: d.m.ino(c), Mode: unixMode(c) &^ 0o7777})
	}
	return &dirHandle{d: d, list: list}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// dirHandle is an open directory: a fixed listing read in order. Offsets
// are positions in the listing (0 is the start).
type dirHandle struct {
	d    *dirNode
	list []fuse.DirEntry
	pos  int
}

// errNoAttr makes go-fuse leave an entry of a READDIRPLUS listing without
// attributes (node ID 0), which the kernel takes as "not given", not as
// ENOENT (fuse_direntplus_link): it looks the entry up when it needs it.
const errNoAttr = syscall.EAGAIN

// Lookup gives the attributes of an entry of a READDIRPLUS listing: for
// directories and symlinks, and files whose size is known, the entry the
// kernel would get from a LOOKUP; nothing for other files, whose size
// would need a fetch — listing a directory fetches nothing.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c := h.d.child(name)
	if c == nil {
		return nil, errNoAttr
	}
	size, ok := c.CachedSize()
	if !ok {
		return nil, errNoAttr
	}
	node, attr := h.d.m.node(c)
	h.d.m.fill(c, size, &out.Attr)
	return h.d.NewInode(ctx, node, attr), 0
}

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if h.pos >= len(h.list) {
		return nil, 0
	}
	e := h.list[h.pos]
	h.pos++
	e.Off = uint64(h.pos)
	return &e, 0
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(len(h.list)) {
		return syscall.EINVAL
	}
	h.pos = int(off)
	return 0
}

func (h *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}
