package cache

import "errors"

// Errors callers branch on (errors.Is). Errors about one block are
// *eris.BlockError values that also match these or eris.ErrNotFound.
var (
	// ErrFull means a put would take the store past its hard cap even
	// after evicting every unpinned block.
	ErrFull = errors.New("block store full")
	// ErrUnavailable means the store cannot be written now (a full disk,
	// a read-only file system): the block was not kept. Reads go on.
	ErrUnavailable = errors.New("block store cannot be written")
	// ErrClosed is returned by a store used after Close.
	ErrClosed = errors.New("block store closed")
	// ErrDamaged marks a block whose stored bytes no longer hash to its
	// reference. The copy has been deleted; the error also matches
	// eris.ErrNotFound, so callers fetch the block elsewhere.
	ErrDamaged = errors.New("stored copy damaged")
	// ErrNotStore means the file is an SQLite database of another program.
	ErrNotStore = errors.New("not an erismount block store")
	// ErrNewerSchema means the file was written by a newer erismount.
	ErrNewerSchema = errors.New("block store schema newer than this program")
	// ErrUnknownPin is returned by Unpin for a name that is not pinned.
	ErrUnknownPin = errors.New("no such pin")
)
