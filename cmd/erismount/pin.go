package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"erismount/eris"
	"erismount/erisfs"
)

// capsOf returns the capabilities that make up rc: an ERIS-FS tree's index
// and every distinct file content, or rc alone when rc is plain content.
func capsOf(ctx context.Context, a *app, rc eris.ReadCapability, g eris.BlockGetter) ([]eris.ReadCapability, *erisfs.Tree, error) {
	tree, err := erisfs.Open(ctx, rc, g, erisfs.OpenOptions{GetterVerifies: true})
	if errors.Is(err, erisfs.ErrInvalidIndex) {
		a.log.Info("not an ERIS-FS tree: treating it as plain content", "urn", rc.URN(), "err", err)
		return []eris.ReadCapability{rc}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	caps := []eris.ReadCapability{rc}
	for e := range tree.All() {
		if e.Kind().IsFile() {
			caps = append(caps, e.Capability())
		}
	}
	return caps, tree, nil
}

func newPinCmd(a *app) *cobra.Command {
	var (
		conc int
		nf   nodeFlags
	)
	cmd := &cobra.Command{
		Use:   "pin URN",
		Short: "Fetch every block of a capability (tree or content) and keep it in the store",
		Long: `pin fetches every block of URN — an ERIS-FS tree's index and all its files, or
plain content — from the store and the peers, many at a time, and tags them with a
pin named by the URN so quota eviction never removes them. Afterwards the tree
reads offline. "erismount status URN" shows what is held; "erismount unpin URN"
lets the blocks be evicted again.`,
		Example: `  erismount pin urn:eris:B4A… --peer coap://peer.example:5683`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rc, src, err := a.openURN(ctx, args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			node, _, err := a.listenNode(ctx, src, nf)
			if err != nil {
				return err
			}
			if node != nil {
				defer node.Close()
			}
			pin, err := src.Store.Pin(ctx, rc.URN())
			if err != nil {
				return err
			}
			view := pin.View(src)
			start := time.Now()
			caps, _, err := capsOf(ctx, a, rc, view)
			if err != nil {
				return errors.Join(err, pin.Release(ctx))
			}
			var bar *progressbar.ProgressBar
			st, err := eris.Prefetch(ctx, caps, view, eris.PrefetchOptions{Progress: func(done, total int64) {
				if bar == nil {
					bar = a.countBar(total, "pinning")
				}
				if bar != nil {
					bar.Set64(done)
				}
			}})
			if bar != nil {
				bar.Finish()
			}
			// Wait for the write-backs and the tags to be committed.
			err = errors.Join(err, src.Tiered.Flush(ctx), pin.Release(ctx), src.Store.Flush(ctx))
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"urn": rc.URN(), "blocks": st.Blocks, "bytes": st.Bytes, "contents": len(caps), "seconds": time.Since(start).Seconds()})
			}
			fmt.Fprintf(a.stdout, "pinned %s: %d blocks (%s) in %d contents, %.1fs\n", rc.URN(), st.Blocks, formatBytes(st.Bytes), len(caps), time.Since(start).Seconds())
			return nil
		},
	}
	cmd.Flags().IntVar(&conc, "jobs", 64, "blocks requested at once")
	a.addNodeFlags(cmd, &nf)
	return cmd
}

func newUnpinCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "unpin URN",
		Short: "Drop the pin of a capability: its blocks may be evicted again",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rc, err := parseURN(args[0])
			if err != nil {
				return err
			}
			store, err := a.openStore(ctx, roleCache)
			if err != nil {
				return err
			}
			defer store.Close()
			return store.Unpin(ctx, rc.URN())
		},
	}
}

func newPinsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "pins",
		Short: "List the pins of the store: kept capabilities and mounted roots",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			store, err := a.openStore(ctx, roleCache)
			if err != nil {
				return err
			}
			defer store.Close()
			pins, err := store.Pins(ctx)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(pins)
			}
			w := tabwriter.NewWriter(a.stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKIND\tBLOCKS\tBYTES\tCREATED")
			for _, p := range pins {
				kind := "pin"
				if p.Mount {
					kind = "mount (" + p.Owner + ")"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", p.Name, kind, p.Blocks, formatBytes(p.Bytes), p.Created.Format(time.RFC3339))
			}
			return w.Flush()
		},
	}
}

// statusRow is one line of `erismount status`.
type statusRow struct {
	Path        string  `json:"path"`
	Blocks      int64   `json:"blocks"`
	TotalBlocks int64   `json:"total_blocks"`
	Bytes       int64   `json:"bytes"`
	TotalBytes  int64   `json:"total_bytes"`
	Local       float64 `json:"local"` // fraction of blocks held
}

func newStatusCmd(a *app) *cobra.Command {
	var depth int
	cmd := &cobra.Command{
		Use:   "status URN",
		Short: "Show how much of a capability is held locally: will it work offline?",
		Long: `status counts the blocks of URN held in the local store against all it has, for
the whole tree and, with --depth, for its entries down to that depth. Counting
needs the tree's index and each file's size: when those are not local they are
fetched from the peers (and then kept), the file contents are not.`,
		Example: `  erismount status urn:eris:B4A… --depth 1`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rc, src, err := a.openURN(ctx, args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			has := src.Store.Has
			row := func(path string, h erisfs.Holding) statusRow {
				r := statusRow{Path: path, Blocks: h.Blocks, TotalBlocks: h.TotalBlocks, Bytes: h.Bytes, TotalBytes: h.TotalBytes}
				if h.TotalBlocks > 0 {
					r.Local = float64(h.Blocks) / float64(h.TotalBlocks)
				}
				return r
			}
			var rows []statusRow
			_, tree, err := capsOf(ctx, a, rc, src)
			if err != nil {
				return err
			}
			if tree == nil { // plain content
				r, err := eris.NewReader(ctx, rc, src)
				if err != nil {
					return err
				}
				size, err := r.SizeContext(ctx)
				if err != nil {
					return err
				}
				held, err := eris.CountHeld(ctx, rc, src.Store, has)
				if err != nil {
					return err
				}
				n := eris.BlockCount(rc, size)
				bs := int64(rc.BlockSize())
				rows = append(rows, row("", erisfs.Holding{Blocks: held, TotalBlocks: n, Bytes: held * bs, TotalBytes: n * bs}))
			} else {
				var visit func(e *erisfs.Entry, d int) error
				visit = func(e *erisfs.Entry, d int) error {
					if e.Kind() == erisfs.Symlink {
						return nil
					}
					h, err := tree.Held(ctx, e, src.Store, has)
					if err != nil {
						return err
					}
					path := e.Path()
					if e == tree.Root() {
						path = "/"
					} else if e.IsDir() {
						path += "/"
					}
					rows = append(rows, row(path, h))
					if d < depth && e.IsDir() {
						for _, c := range e.Children() {
							if err := visit(c, d+1); err != nil {
								return err
							}
						}
					}
					return nil
				}
				if err := visit(tree.Root(), 0); err != nil {
					return err
				}
			}
			if a.json {
				return a.printJSON(map[string]any{"urn": rc.URN(), "entries": rows})
			}
			w := tabwriter.NewWriter(a.stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(w, "LOCAL\tBLOCKS\tBYTES\tENTRY\t")
			for _, r := range rows {
				fmt.Fprintf(w, "%.1f%%\t%d/%d\t%s/%s\t%s\t\n", 100*r.Local, r.Blocks, r.TotalBlocks, formatBytes(r.Bytes), formatBytes(r.TotalBytes), r.Path)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&depth, "depth", 0, "also show entries down to this depth (1: top-level entries)")
	return cmd
}

// countBar returns a progress bar counting items (blocks, store items) on
// stderr when it is a terminal, else nil.
func (a *app) countBar(total int64, what string) *progressbar.ProgressBar {
	return a.newBar(total, what, progressbar.OptionShowCount())
}

// formatBytes prints a byte count with a binary unit.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
