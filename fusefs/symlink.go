package fusefs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// symlinkNode is a symbolic link; its target is in the index, so nothing
// is fetched.
type symlinkNode struct {
	gofs.Inode
	entryNode
}

func (s *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(s.e.Target()), 0
}

func (s *symlinkNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	s.m.fill(s.e, int64(len(s.e.Target())), &out.Attr)
	return 0
}
