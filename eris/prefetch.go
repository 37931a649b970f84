package eris

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// BlockCount is how many blocks (leaves and internal nodes, duplicates
// counted) encode content of size bytes under rc's block size and level:
// the leaves of the padded content (padding adds at least one byte, spec
// §2.2) and the nodes of every level up to the root.
func BlockCount(rc ReadCapability, size int64) int64 {
	bs := int64(rc.BlockSize())
	arity := bs / 64
	n := size/bs + 1
	total := n
	for range rc.Level() {
		n = (n + arity - 1) / arity
		total += n
	}
	return total
}

// CountHeld counts the blocks of rc that l holds (has says whether one is
// held), walking the tree through the internal nodes l has. Below an
// internal node l lacks nothing more is counted, so the count is exact when
// everything is held and a lower bound otherwise; l is never asked to fetch
// from elsewhere.
func CountHeld(ctx context.Context, rc ReadCapability, l BlockGetter, has func(context.Context, Ref) (bool, error)) (int64, error) {
	var n int64
	err := Walk(ctx, rc, l, func(ref Ref, level int) error {
		ok, err := has(ctx, ref)
		if err != nil {
			return err
		}
		if ok {
			n++
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return 0, err
	}
	return n, nil
}

// PrefetchOptions configure Prefetch. The zero value is useful.
type PrefetchOptions struct {
	// Concurrency bounds the blocks requested at once; 0 means 64.
	Concurrency int
	// Progress, if set, is called (from several goroutines, serialized)
	// as leaves arrive, with the leaves fetched and the total to fetch.
	Progress func(done, total int64)
}

// PrefetchStats say what Prefetch fetched.
type PrefetchStats struct {
	Blocks int64 // distinct blocks fetched (internal nodes and leaves)
	Bytes  int64
}

// Prefetch fetches every block of every capability in caps through g and
// discards it: g is a caching or pinning store that keeps what passes. First
// the trees are walked (their internal nodes fetched, several trees at once),
// then the distinct leaves are fetched with many requests in flight. It is
// `erismount pin`: fetch everything once, keep it.
func Prefetch(ctx context.Context, caps []ReadCapability, g BlockGetter, opts PrefetchOptions) (PrefetchStats, error) {
	conc := opts.Concurrency
	if conc <= 0 {
		conc = 64
	}
	var (
		mu     sync.Mutex
		leaves = make(map[Ref]bool)
		seen   = make(map[ReadCapability]bool)
		nodes  atomic.Int64
		bytes  atomic.Int64
	)
	walk, wctx := errgroup.WithContext(ctx)
	walk.SetLimit(max(1, conc/8))
	for _, rc := range caps {
		if seen[rc] {
			continue
		}
		seen[rc] = true
		walk.Go(func() error {
			return Walk(wctx, rc, g, func(ref Ref, level int) error {
				if level > 0 {
					nodes.Add(1) // Walk fetched it
					bytes.Add(int64(rc.BlockSize()))
					return nil
				}
				mu.Lock()
				leaves[ref] = true
				mu.Unlock()
				return nil
			})
		})
	}
	if err := walk.Wait(); err != nil {
		return PrefetchStats{}, err
	}
	total := int64(len(leaves))
	var done atomic.Int64
	var progress sync.Mutex
	fetch, fctx := errgroup.WithContext(ctx)
	fetch.SetLimit(conc)
	for ref := range leaves {
		fetch.Go(func() error {
			b, err := g.GetBlock(fctx, ref)
			if err != nil {
				return err
			}
			bytes.Add(int64(len(b)))
			n := done.Add(1)
			if opts.Progress != nil {
				progress.Lock()
				opts.Progress(n, total)
				progress.Unlock()
			}
			return nil
		})
	}
	err := fetch.Wait()
	return PrefetchStats{Blocks: nodes.Load() + done.Load(), Bytes: bytes.Load()}, err
}
