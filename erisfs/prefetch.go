package erisfs

import (
	"context"
	"fmt"
	"io/fs"

	"erismount/eris"
)

// Prefetch fetches every block of the file e through the tree's getter and
// discards them: the getter is a caching store that keeps what passes
// (cache.Tiered), so that a later read of e is local. At most conc blocks
// are requested at once (0 means eris.Prefetch's default). It returns the
// file's size, which the tree then knows without a fetch.
func (t *Tree) Prefetch(ctx context.Context, e *Entry, conc int) (int64, error) {
	if !e.kind.IsFile() {
		return 0, fmt.Errorf("erisfs: prefetch %s: %w: is a %v", displayPath(e.Path()), fs.ErrInvalid, e.kind)
	}
	if _, err := eris.Prefetch(ctx, []eris.ReadCapability{e.cap}, t.g, eris.PrefetchOptions{Concurrency: conc}); err != nil {
		return 0, fmt.Errorf("erisfs: prefetch %s: %w", displayPath(e.Path()), err)
	}
	return t.Size(ctx, e)
}
