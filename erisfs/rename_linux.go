package erisfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace renames old to new, failing with fs.ErrExist (EEXIST)
// if new exists — atomically, unlike a check before os.Rename, which
// would replace an empty directory or a file created meanwhile.
func renameNoReplace(old, new string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE); err != nil {
		return &os.LinkError{Op: "rename", Old: old, New: new, Err: err}
	}
	return nil
}
