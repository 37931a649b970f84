package fusefs

import (
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Every go-fuse interface a node or handle implements, checked at compile
// time: a method with a wrong signature would otherwise be silently unused.
var (
	_ gofs.NodeLookuper       = (*dirNode)(nil)
	_ gofs.NodeGetattrer      = (*dirNode)(nil)
	_ gofs.NodeOpendirHandler = (*dirNode)(nil)
	_ gofs.NodeStatfser       = (*dirNode)(nil)
	_ gofs.NodeGetxattrer     = (*dirNode)(nil)
	_ gofs.NodeListxattrer    = (*dirNode)(nil)
	_ gofs.FileReaddirenter   = (*dirHandle)(nil)
	_ gofs.FileSeekdirer      = (*dirHandle)(nil)
	_ gofs.FileReleasedirer   = (*dirHandle)(nil)
	_ gofs.FileLookuper       = (*dirHandle)(nil)
	_ gofs.NodeGetattrer      = (*fileNode)(nil)
	_ gofs.NodeOpener         = (*fileNode)(nil)
	_ gofs.NodeGetxattrer     = (*fileNode)(nil)
	_ gofs.NodeListxattrer    = (*fileNode)(nil)
	_ gofs.FileReader         = (*fileHandle)(nil)
	_ gofs.FileReleaser       = (*fileHandle)(nil)
	_ fuse.ReadResult         = (*reply)(nil)
	_ interface {
		Slices() ([][]byte, fuse.Status) // go-fuse's vectored write (unexported withSlice)
	} = (*reply)(nil)
	_ gofs.NodeReadlinker = (*symlinkNode)(nil)
	_ gofs.NodeGetattrer  = (*symlinkNode)(nil)
	_ gofs.NodeStatfser   = (*symlinkNode)(nil)
	_ gofs.NodeGetxattrer = (*symlinkNode)(nil)
)

// The store view's root and the root nodes of its items.
var (
	_ gofs.NodeLookuper       = (*storeRoot)(nil)
	_ gofs.NodeGetattrer      = (*storeRoot)(nil)
	_ gofs.NodeOpendirHandler = (*storeRoot)(nil)
	_ gofs.NodeStatfser       = (*storeRoot)(nil)
	_ gofs.NodeOnForgetter    = (*itemDir)(nil)
	_ gofs.NodeLookuper       = (*itemDir)(nil)
	_ gofs.NodeOnForgetter    = (*itemFile)(nil)
	_ gofs.NodeOpener         = (*itemFile)(nil)
	_ gofs.NodeOnForgetter    = (*itemSymlink)(nil)
	_ gofs.NodeReadlinker     = (*itemSymlink)(nil)
)
