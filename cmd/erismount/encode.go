package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"erismount/cache"
	"erismount/eris"
)

func newEncodeCmd(a *app) *cobra.Command {
	var blockSize int
	cmd := &cobra.Command{
		Use:   "encode FILE",
		Short: "Encode a file (or - for stdin) into ERIS blocks in the store and print its URN",
		Example: `  erismount encode ./hello.tar
  tar c dir | erismount encode --block-size 32768 -`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var in io.Reader = a.stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return usageError{err}
				}
				defer f.Close()
				in = f
			}
			if blockSize != 0 && !eris.ValidBlockSize(blockSize) {
				return usageError{fmt.Errorf("--block-size %d: want 1024 or 32768", blockSize)}
			}
			store, err := a.openStore(ctx, roleCache)
			if err != nil {
				return err
			}
			defer store.Close()
			rc, st, err := eris.EncodeStats(ctx, in, store, eris.EncodeOptions{BlockSize: blockSize})
			if err != nil {
				return err
			}
			// Blocks encoded into the cache are pinned under their URN, so
			// quota eviction never takes what only this machine has.
			if err := pinAll(ctx, store, rc); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"urn": rc.URN(), "size": st.Size, "blocks": st.Blocks, "level": rc.Level(), "block_size": rc.BlockSize()})
			}
			a.log.Info("encoded", "bytes", st.Size, "blocks", st.Blocks, "level", rc.Level())
			fmt.Fprintln(a.stdout, rc.URN())
			return nil
		},
	}
	cmd.Flags().IntVar(&blockSize, "block-size", 0, "1024 or 32768 (default: 1024 below 16 KiB of content, else 32768)")
	return cmd
}

func newDecodeCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "decode URN",
		Short:   "Write the content of an ERIS capability to stdout, fetching missing blocks from peers",
		Example: `  erismount decode urn:eris:B4A… --peer coap://127.0.0.1:5683 > out`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rc, src, err := a.openURN(ctx, args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			r, err := eris.NewReaderOptions(ctx, rc, src, eris.ReaderOptions{GetterVerifies: true})
			if err != nil {
				return err
			}
			// WriteTo fetches the next chunk while writing the previous one.
			_, err = r.WriteTo(a.stdout)
			return err
		},
	}
}

// pinAll pins every block of rc (already stored) under its URN and waits
// until the tags are committed.
func pinAll(ctx context.Context, store *cache.SQLite, rc eris.ReadCapability) error {
	pin, err := store.Pin(ctx, rc.URN())
	if err != nil {
		return err
	}
	err = eris.Walk(ctx, rc, store, func(ref eris.Ref, _ int) error {
		pin.Tag(ref)
		return nil
	})
	return errors.Join(err, pin.Release(ctx), store.Flush(ctx))
}
