package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"erismount/erisfs"
)

func newGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get URN DEST",
		Short: "Write the ERIS-FS tree of URN to DEST, verified, fetching missing blocks from peers",
		Long: `Decode the ERIS-FS tree URN names and write it to DEST, which must not exist:
files 0444, executables 0555, directories 0555, symlinks created as they are and
never followed. Blocks come from the store (--store) and the peers (--peer), each
verified against its reference. The tree is written into a temporary entry next
to DEST and renamed at the end; on any error or interruption it is removed and
DEST does not appear. A tree that is a single file makes DEST that file.

Exit codes: 0 written, 2 bad URN, not an ERIS-FS tree, or DEST exists,
3 blocks unavailable, 4 corrupt block.`,
		Example: `  erismount get urn:eris:B4A… ./hello --peer coap://192.0.2.7:5683`,
		Args:    exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rc, err := parseURN(args[0])
			if err != nil {
				return err
			}
			dest := args[1]
			src, err := a.openSource(ctx)
			if err != nil {
				return err
			}
			defer src.Close()
			tree, err := erisfs.Open(ctx, rc, src, erisfs.OpenOptions{GetterVerifies: true})
			if errors.Is(err, erisfs.ErrInvalidIndex) || errors.Is(err, erisfs.ErrLimit) {
				return usageError{fmt.Errorf("%s is not an ERIS-FS tree this program accepts: %w", rc, err)}
			}
			if err != nil {
				return err
			}
			var opts erisfs.WriteOptions
			bar := a.progressBar(-1, "get "+dest) // total unknown: the index has no sizes
			if bar != nil {
				opts.Progress = func(done int64) { bar.Set64(done) }
			}
			err = tree.WriteDir(ctx, dest, opts)
			if bar != nil {
				bar.Clear()
			}
			if errors.Is(err, erisfs.ErrExists) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			a.log.Info("written", "urn", rc.URN(), "dest", dest, "entries", tree.Len())
			if a.json {
				return a.printJSON(map[string]any{"urn": rc.URN(), "path": dest, "entries": tree.Len()})
			}
			fmt.Fprintln(a.stdout, dest)
			return nil
		},
	}
}
