package narinfo

import (
	"context"
	"errors"
	"io"

	"erismount/narinfo/nar"
)

// CopyInNar is CopyIn of the tree a nar stream holds: r is parsed as it
// is read (package nar's Reader rejects any malformed archive) and written
// into the store the same way, landing only if what was written
// serializes to want. A failing r (a download cut short, a source that
// stopped with an error) leaves nothing in storeDir.
func CopyInNar(ctx context.Context, r io.Reader, storeDir, storePath string, want nar.Sum, opts CopyInOptions) error {
	return copyIn(ctx, storeDir, storePath, want, opts, func(visit nar.WalkFunc) error {
		nr := nar.NewReader(r)
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			h, err := nr.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := visit(h, nr); err != nil {
				return err
			}
		}
	})
}
