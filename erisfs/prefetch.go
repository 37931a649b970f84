package erisfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

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

// BlockHolder is a store that says which blocks it holds without reading
// them: cache.Tiered (memory and disk) and cache.SQLite are.
type BlockHolder interface {
	HasBlocks(ctx context.Context, refs []eris.Ref) ([]bool, error)
}

// FetchMissingOptions configure FetchMissing. The zero value is useful.
type FetchMissingOptions struct {
	// Local says which blocks are held; nil means the tree's getter, which
	// must then be a BlockHolder.
	Local BlockHolder
	// Concurrency bounds the missing blocks requested at once; 0 means
	// 256, a peer's whole window: blocks of a few files scattered through
	// a tree are many round trips, and only many in flight fill a link.
	Concurrency int
	// Admit, if set, is called in order, before the missing blocks of each
	// file are requested, with the bytes they are; it may wait (to keep the
	// fetch within a bounded distance ahead of a reader), and its error
	// stops FetchMissing. Files with nothing missing are not admitted.
	Admit func(ctx context.Context, e *Entry, bytes int64) error
}

// MissingStats say what FetchMissing found and fetched.
type MissingStats struct {
	Contents int64 // distinct file contents walked
	Leaves   int64 // their leaves, looked up locally
	Missing  int64 // leaves not held, fetched
	Bytes    int64 // their bytes
}

// ErrNoHolder is FetchMissing's error for a tree whose getter cannot say
// which blocks it holds, when FetchMissingOptions.Local is nil.
var ErrNoHolder = errors.New("erisfs: the block getter cannot say which blocks it holds")

// missingBatch is how many files FetchMissing walks and looks up at once.
const missingBatch = 256

// walkers bounds the contents whose internal nodes are walked at once.
const walkers = 8

// FetchMissing finds, in the order given, which leaves of the files'
// contents the local store lacks, and fetches those through the tree's
// getter (a caching store keeps them, so that reading the files later is
// local), many at once, marked eris.Background. The internal nodes are
// walked through the tree's node cache: fetched once, whether here or by
// a later read. It is what makes a tree that is mostly held already — an
// upgrade of an item whose older version is cached — wait for the link
// once, at its bandwidth, rather than once per file it reaches.
//
// Nothing is read from the local store but the internal nodes, and no
// block is kept here: at most Concurrency blocks are held in flight.
func (t *Tree) FetchMissing(ctx context.Context, files []*Entry, opts FetchMissingOptions) (MissingStats, error) {
	local := opts.Local
	if local == nil {
		h, ok := t.g.(BlockHolder)
		if !ok {
			return MissingStats{}, ErrNoHolder
		}
		local = h
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = 256
	}
	var st MissingStats
	fetch, fctx := errgroup.WithContext(ctx)
	refs := make(chan eris.Ref)
	var fetched, bytes atomic.Int64
	for range conc {
		fetch.Go(func() error {
			bctx := eris.Background(fctx)
			for ref := range refs {
				b, err := t.g.GetBlock(bctx, ref)
				if err != nil {
					return err
				}
				fetched.Add(1)
				bytes.Add(int64(len(b)))
			}
			return nil
		})
	}
	err := t.findMissing(fctx, files, local, &st, func(e *Entry, missing []eris.Ref, n int64) error {
		if opts.Admit != nil {
			if err := opts.Admit(fctx, e, n); err != nil {
				return err
			}
		}
		for _, ref := range missing {
			select {
			case refs <- ref:
			case <-fctx.Done():
				return context.Cause(fctx)
			}
		}
		return nil
	})
	close(refs)
	err = errors.Join(err, fetch.Wait())
	st.Missing, st.Bytes = fetched.Load(), bytes.Load()
	if err != nil {
		return st, fmt.Errorf("erisfs: fetch missing blocks: %w", err)
	}
	return st, nil
}

// findMissing walks the files in batches and calls found, in order, for
// each file with leaves local lacks (each distinct content once).
func (t *Tree) findMissing(ctx context.Context, files []*Entry, local BlockHolder, st *MissingStats, found func(e *Entry, missing []eris.Ref, bytes int64) error) error {
	seen := make(map[eris.ReadCapability]bool)
	type content struct {
		e      *Entry
		leaves []eris.Ref
	}
	batch := make([]content, 0, missingBatch)
	var all []eris.Ref
	for start := 0; start < len(files); {
		batch = batch[:0]
		for ; start < len(files) && len(batch) < missingBatch; start++ {
			e := files[start]
			if !e.kind.IsFile() || seen[e.cap] {
				continue
			}
			seen[e.cap] = true
			batch = append(batch, content{e: e})
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(walkers)
		for i := range batch {
			c := &batch[i]
			if c.e.cap.Level() == 0 {
				c.leaves = []eris.Ref{c.e.cap.Root()}
				continue
			}
			g.Go(func() error {
				r, err := eris.NewReaderOptions(gctx, c.e.cap, t.g, eris.ReaderOptions{Nodes: t.nodes, GetterVerifies: t.verified})
				if err != nil {
					return err
				}
				err = r.Walk(gctx, func(ref eris.Ref, level int) error {
					if level == 0 {
						c.leaves = append(c.leaves, ref)
					}
					return nil
				})
				if err != nil {
					return fmt.Errorf("%s: %w", displayPath(c.e.Path()), err)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		all = all[:0]
		for _, c := range batch {
			all = append(all, c.leaves...)
		}
		held, err := local.HasBlocks(ctx, all)
		if err != nil {
			return err
		}
		st.Contents += int64(len(batch))
		st.Leaves += int64(len(all))
		at := 0
		for _, c := range batch {
			var missing []eris.Ref
			for i, ref := range c.leaves {
				if !held[at+i] {
					missing = append(missing, ref)
				}
			}
			at += len(c.leaves)
			if len(missing) > 0 {
				if err := found(c.e, missing, int64(len(missing))*int64(c.e.cap.BlockSize())); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Getter returns the block getter the tree reads through.
func (t *Tree) Getter() eris.BlockGetter { return t.g }
