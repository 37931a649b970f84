package narinfo

import (
	"context"
	"fmt"

	"erismount/eris"
	"erismount/erisfs"
)

// CopyInERIS is copy-in from a signed narinfo: it checks n's Guix
// signature against acl (anything but Valid is an error matching
// ErrNotValid), decodes the ERIS-FS tree named by its ERIS field through g
// — the cache and peers; every block is verified against its reference —
// without mounting anything, and copies it into storeDir with CopyIn, which
// lands it only if it serializes to the signed NarHash and NarSize.
func CopyInERIS(ctx context.Context, n *Narinfo, acl *ACL, g eris.BlockGetter, storeDir string, opts CopyInOptions) error {
	if _, err := n.Verify(acl); err != nil {
		return fmt.Errorf("copy-in %s: %w", n.StorePath, err)
	}
	if err := checkStoreDir(storeDir, n.StorePath); err != nil {
		return err // before fetching anything
	}
	rc, err := n.Capability()
	if err != nil {
		return err
	}
	tree, err := erisfs.Open(ctx, rc, g, erisfs.OpenOptions{})
	if err != nil {
		return fmt.Errorf("copy-in %s: %w", n.StorePath, err)
	}
	return CopyIn(ctx, tree.FS(ctx), storeDir, n.StorePath, n.Sum(), opts)
}
