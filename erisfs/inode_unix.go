//go:build unix

package erisfs

import (
	"io/fs"
	"os"
	"syscall"
)

// fileID identifies a file on disk: hard links share one.
type fileID struct{ dev, ino uint64 }

// linkID returns the identity of a file with more than one link, so that
// its content is encoded once for all its paths.
func linkID(info fs.FileInfo) (fileID, bool) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || st.Nlink < 2 {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, true
}

// sameFile reports whether a and b describe the same file, when the file
// system can tell; otherwise it trusts the caller.
func sameFile(a, b fs.FileInfo) bool {
	_, okA := a.Sys().(*syscall.Stat_t)
	_, okB := b.Sys().(*syscall.Stat_t)
	if !okA || !okB {
		return true
	}
	return os.SameFile(a, b)
}
