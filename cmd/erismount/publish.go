package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"erismount/cache"
	"erismount/eris"
	"erismount/erisfs"
)

func newPublishCmd(a *app) *cobra.Command {
	var narPath string
	var drop bool
	var blockSize int
	var items *itemFlags // store items: publish_item.go
	cmd := &cobra.Command{
		Use:   "publish DIR | --nar FILE | (--key FILE | --nix-key FILE) STORE-PATH…",
		Short: "Encode a tree (or a nar) into ERIS-FS blocks in the store and print its URN",
		Long: `Encode the tree at DIR — or the store item serialized in the nar FILE (- for
stdin), read once as a stream — into ERIS-FS: every file's content and the index
become ERIS blocks in the store (--store, kept without eviction and pinned under
the URN), and the tree's urn:eris: is printed.

The same tree gives the same URN wherever and whenever it is published: only
paths, file contents, the executable bit and symlink targets count, not times,
owners or other permission bits. Identical files are stored once.

Symlinks are published as symlinks, never followed; a DIR that is itself a file
or a symlink publishes that single file (write DIR/ to publish the directory a
symlink points to). With --store s3://BUCKET/PREFIX the blocks go to an
S3-compatible bucket instead, as objects PREFIX/REF (REF: the 52-character
base32 reference), 64 uploads at a time; a block the bucket has is not sent
again. Endpoint, region and path style come from the URL
(?endpoint=http://HOST:PORT&region=R&path-style=true) or from AWS_ENDPOINT_URL,
AWS_REGION and the AWS config file; keys from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY or the shared credentials file (AWS_PROFILE), never
from the URL.

ERIS-FS cannot hold empty directories (except an empty
root), devices, sockets, FIFOs or names that are not UTF-8: publishing refuses
them naming the path, unless --drop-unrepresentable leaves them out with a
warning (the tree then no longer matches the original's NarHash).
` + publishItemHelp,
		Example: `  erismount publish /gnu/store/…-hello-2.12
  erismount publish --nar hello.nar --store /srv/erismount/blocks.sqlite
  erismount publish --store 's3://blocks/eris?endpoint=http://127.0.0.1:9000' /gnu/store/…-hello-2.12
  guix archive --export … | erismount publish --nar -
  erismount publish --peer coap://127.0.0.1:5683 --nix-key key.sec --narinfo-dir ./narinfo /nix/store/…-hello
  erismount publish --key /etc/guix/signing-key.sec --store-path /gnu/store/…-hello-2.12 --nar hello.nar --references none
  erismount publish --nix-key key.sec --narinfo-dir site --nar-dir site/nar --compression zstd --eris-nar --blocks-dir site/blocks /nix/store/…-hello`,
		Args: func(cmd *cobra.Command, args []string) error {
			if items.active() {
				return nil // checked by publishItems
			}
			if (narPath == "") == (len(args) == 0) || len(args) > 1 {
				return usageError{errors.New("give either DIR or --nar FILE")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if blockSize != 0 && !eris.ValidBlockSize(blockSize) {
				return usageError{fmt.Errorf("--block-size %d: want 1024 or 32768", blockSize)}
			}
			if items.active() {
				return a.publishItems(ctx, items, args, narPath, erisfs.EncodeOptions{ContentBlockSize: blockSize, DropUnrepresentable: drop, Logger: a.log})
			}
			var in io.Reader
			if narPath != "" {
				in = a.stdin
				if narPath != "-" {
					f, err := os.Open(narPath)
					if err != nil {
						return usageError{err}
					}
					defer f.Close()
					in = f
				}
			} else if _, err := os.Lstat(args[0]); err != nil {
				return usageError{err}
			}
			if items.static.active() {
				return usageError{errors.New("--nar-dir, --compression and --eris-nar are for store items (with --key or --nix-key)")}
			}
			var store eris.BlockStore
			var local *cache.SQLite
			var flush func(context.Context) error
			if items.static.blocksDir != "" {
				bd, err := items.static.blockDir()
				if err != nil {
					return err
				}
				store = bd
			} else {
				c, l, err := a.openContent(ctx)
				if err != nil {
					return err
				}
				defer c.Close()
				store, local, flush = c, l, c.Flush
			}
			opts := erisfs.EncodeOptions{ContentBlockSize: blockSize, DropUnrepresentable: drop, Logger: a.log}
			var err error
			var rc eris.ReadCapability
			var st erisfs.EncodeStats
			// A failed publish takes back the blocks it added to a SQLite
			// content store, where nothing unpinned is ever evicted (a
			// bucket or a block directory keeps them: see the README).
			var put eris.BlockPutter = store
			var undo *undoPutter
			if local != nil {
				undo = &undoPutter{store: local}
				put = undo
			}
			if in != nil {
				rc, st, err = erisfs.EncodeNar(ctx, in, put, opts)
			} else {
				rc, st, err = erisfs.EncodeDir(ctx, args[0], put, opts)
			}
			if err != nil && undo != nil {
				if uerr := undo.undo(context.WithoutCancel(ctx)); uerr != nil {
					a.log.Warn("removing the blocks of a failed publish", "err", uerr)
				} else {
					a.log.Info("removed the blocks of a failed publish", "blocks", len(undo.added))
				}
			}
			if errors.Is(err, erisfs.ErrUnrepresentable) || errors.Is(err, erisfs.ErrLimit) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			if flush != nil {
				if err := flush(ctx); err != nil {
					return err
				}
			}
			if local != nil {
				if err := pinTree(ctx, local, rc); err != nil {
					return err
				}
			}
			if a.json {
				return a.printJSON(map[string]any{
					"urn": rc.URN(), "files": st.Files, "executables": st.Executables, "symlinks": st.Symlinks,
					"directories": st.Directories, "bytes": st.Bytes, "distinct_contents": st.DistinctContents,
					"dedup_files": st.DedupFiles, "dedup_bytes": st.DedupBytes, "blocks": st.Blocks,
					"index_bytes": st.IndexBytes, "dropped": st.Dropped,
				})
			}
			a.log.Info("published", "files", st.Files, "symlinks", st.Symlinks, "directories", st.Directories,
				"bytes", st.Bytes, "dedup_files", st.DedupFiles, "dedup_bytes", st.DedupBytes,
				"blocks", st.Blocks, "index_bytes", st.IndexBytes, "dropped", st.Dropped)
			fmt.Fprintln(a.stdout, rc.URN())
			return nil
		},
	}
	items = addItemFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&narPath, "nar", "", "publish the store item in this nar (- for stdin) instead of DIR")
	f.BoolVar(&drop, "drop-unrepresentable", false, "leave out, with a warning, what ERIS-FS cannot hold instead of failing")
	f.IntVar(&blockSize, "block-size", 0, "block size of file contents, 1024 or 32768 (default: per file, 1024 below 16 KiB, else 32768)")
	return cmd
}

// undoPutter puts blocks into store and notes those it added (absent
// before), so that a failed publish can remove them again. A block that
// was there already — part of another tree — is never removed.
type undoPutter struct {
	store *cache.SQLite
	mu    sync.Mutex
	added []eris.Ref
}

func (u *undoPutter) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	had, err := u.store.Has(ctx, ref)
	if err != nil {
		return err
	}
	if err := u.store.PutBlock(ctx, ref, block); err != nil {
		return err
	}
	if !had {
		u.mu.Lock()
		u.added = append(u.added, ref)
		u.mu.Unlock()
	}
	return nil
}

// undo deletes the blocks u added, many at a time (the store's writer
// commits concurrent deletes together).
func (u *undoPutter) undo(ctx context.Context) error {
	u.mu.Lock()
	added := u.added
	u.mu.Unlock()
	var g errgroup.Group
	g.SetLimit(64)
	for _, ref := range added {
		g.Go(func() error { return u.store.Delete(ctx, ref) })
	}
	return g.Wait()
}

// pinTree pins every block of the tree rc (already stored) under its URN,
// so that the store never evicts what was published, and waits until the
// tags are committed.
func pinTree(ctx context.Context, store *cache.SQLite, rc eris.ReadCapability) error {
	tree, err := erisfs.Open(ctx, rc, store, erisfs.OpenOptions{})
	if err != nil {
		return err
	}
	pin, err := store.Pin(ctx, rc.URN())
	if err != nil {
		return err
	}
	err = tree.WalkBlocks(ctx, func(ref eris.Ref, _ int) error {
		pin.Tag(ref)
		return nil
	})
	return errors.Join(err, pin.Release(ctx), store.Flush(ctx))
}
