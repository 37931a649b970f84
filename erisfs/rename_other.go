//go:build !linux

package erisfs

import (
	"fmt"
	"io/fs"
	"os"
)

// renameNoReplace renames old to new unless new exists (checked first:
// not atomic where renameat2 is missing).
func renameNoReplace(old, new string) error {
	if _, err := os.Lstat(new); err == nil {
		return fmt.Errorf("rename %s: %w", new, fs.ErrExist)
	}
	return os.Rename(old, new)
}
