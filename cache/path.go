package cache

import (
	"fmt"
	"os"
	"path/filepath"
)

// DefaultPath is where the block store lives unless told otherwise:
// $XDG_CACHE_HOME/erismount/blocks.sqlite, or ~/.cache/erismount/blocks.sqlite
// when XDG_CACHE_HOME is unset or relative (the XDG Base Directory spec says
// to ignore relative values). It does not create anything.
func DefaultPath() (string, error) {
	dir := os.Getenv("XDG_CACHE_HOME")
	if !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cache: default path: XDG_CACHE_HOME is unset and %w", err)
		}
		dir = filepath.Join(home, ".cache")
	}
	return filepath.Join(dir, "erismount", "blocks.sqlite"), nil
}
