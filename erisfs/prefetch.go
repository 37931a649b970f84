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

// Leaves returns the references of the leaves of a file's content, in
// order. A content of one block is its own leaf; otherwise the internal
// nodes are walked through g (nil: the tree's getter) and the tree's node
// cache, and checked as reads check them, so that a later read of the file
// finds them there.
func (t *Tree) Leaves(ctx context.Context, e *Entry, g eris.BlockGetter) ([]eris.Ref, error) {
	if !e.kind.IsFile() {
		return nil, fmt.Errorf("erisfs: leaves of %s: %w: is a %v", displayPath(e.Path()), fs.ErrInvalid, e.kind)
	}
	if e.cap.Level() == 0 {
		return []eris.Ref{e.cap.Root()}, nil
	}
	r, err := t.OpenVia(ctx, e, g)
	if err != nil {
		return nil, err
	}
	var leaves []eris.Ref
	err = r.Walk(ctx, func(ref eris.Ref, level int) error {
		if level == 0 {
			leaves = append(leaves, ref)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("erisfs: leaves of %s: %w", displayPath(e.Path()), err)
	}
	return leaves, nil
}

// OpenVia is Open reading through g instead of the tree's getter (nil: the
// tree's getter), sharing the tree's node cache. g must verify what it
// returns if the tree's getter does (OpenOptions.GetterVerifies): a getter
// that hands out blocks read ahead in bulk, falling back to the tree's.
func (t *Tree) OpenVia(ctx context.Context, e *Entry, g eris.BlockGetter) (*eris.Reader, error) {
	if g == nil {
		g = t.g
	}
	if !e.kind.IsFile() {
		return nil, fmt.Errorf("erisfs: open %s: %w: is a %v", displayPath(e.Path()), fs.ErrInvalid, e.kind)
	}
	r, err := eris.NewReaderOptions(ctx, e.cap, g, eris.ReaderOptions{Nodes: t.nodes, GetterVerifies: t.verified})
	if err != nil {
		return nil, fmt.Errorf("erisfs: open %s: %w", displayPath(e.Path()), err)
	}
	return r, nil
}

// Getter returns the block getter the tree reads through.
func (t *Tree) Getter() eris.BlockGetter { return t.g }
