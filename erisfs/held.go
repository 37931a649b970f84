package erisfs

import (
	"context"
	"errors"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"erismount/eris"
)

// heldConcurrency bounds the contents Held counts at once.
const heldConcurrency = 8

// Holding is what Held counts: blocks (and their bytes, block size
// times count) of an entry held locally, out of all it has.
type Holding struct {
	Blocks, TotalBlocks int64
	Bytes, TotalBytes   int64
}

// Complete reports whether every block is held: the entry reads offline.
func (h Holding) Complete() bool { return h.Blocks == h.TotalBlocks }

// Held answers "will e work offline?": how many of the blocks of e are held
// by local (has says whether one is), and how many there are. For a file
// that is its content; for a directory every distinct content below it; for
// the root of the tree also the index. Sizes (and so totals) come from local
// when it holds a content's rightmost path, else through the tree's getter,
// which may fetch a little; the blocks themselves are only counted, never
// fetched (eris.CountHeld).
func (t *Tree) Held(ctx context.Context, e *Entry, local eris.BlockGetter, has func(context.Context, eris.Ref) (bool, error)) (Holding, error) {
	type content struct {
		rc   eris.ReadCapability
		e    *Entry // nil: the index, whose size is known
		size int64
	}
	var todo []content
	seen := make(map[eris.ReadCapability]bool)
	var walk func(e *Entry)
	walk = func(e *Entry) {
		switch {
		case e.IsDir():
			for c := range e.All() {
				walk(c)
			}
		case e.Kind().IsFile() && !seen[e.Capability()]:
			seen[e.Capability()] = true
			todo = append(todo, content{rc: e.Capability(), e: e})
		}
	}
	if e == t.Root() {
		todo = append(todo, content{rc: t.Capability(), size: int64(t.IndexSize())})
	}
	walk(e)

	var nhave, ntotal, bhave, btotal atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(heldConcurrency)
	for _, c := range todo {
		g.Go(func() error {
			size := c.size
			if c.e != nil {
				var err error
				if size, err = t.localSize(gctx, c.e, local); err != nil {
					return err
				}
			}
			h, err := eris.CountHeld(gctx, c.rc, local, has)
			if err != nil {
				return err
			}
			n := eris.BlockCount(c.rc, size)
			bs := int64(c.rc.BlockSize())
			nhave.Add(h)
			ntotal.Add(n)
			bhave.Add(h * bs)
			btotal.Add(n * bs)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Holding{}, err
	}
	return Holding{Blocks: nhave.Load(), TotalBlocks: ntotal.Load(), Bytes: bhave.Load(), TotalBytes: btotal.Load()}, nil
}

// localSize is a file's size from local when it holds the content's
// rightmost path, else through the tree: asking whether a file is here
// should not need the network when it is.
func (t *Tree) localSize(ctx context.Context, e *Entry, local eris.BlockGetter) (int64, error) {
	if n, ok := e.CachedSize(); ok {
		return n, nil
	}
	r, err := eris.NewReader(ctx, e.Capability(), local)
	if err != nil {
		return 0, err
	}
	if n, err := r.SizeContext(ctx); err == nil {
		return n, nil
	} else if !errors.Is(err, eris.ErrNotFound) {
		return 0, err
	}
	return t.Size(ctx, e)
}
