package eris

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"
)

// ErrTooLarge is matched by the error of ReadAll for content longer than
// its limit.
var ErrTooLarge = errors.New("content too large")

// readAllConcurrency bounds the blocks ReadAll requests at once.
const readAllConcurrency = 64

// ReadAll reads the whole content, at most max bytes. It fetches the tree
// a level at a time, every block of a level at once (at most 64 in
// flight): content of any length costs a round trip per level of its tree
// and the time to carry it, where ReadAt would first follow the rightmost
// path to learn the size and then fetch the leaves a window at a time.
// Every block is checked as ReadAt checks it; content longer than max is
// refused with an error matching ErrTooLarge, before its leaves are
// fetched.
func (r *Reader) ReadAll(ctx context.Context, max int64) ([]byte, error) {
	return r.ReadAllFunc(ctx, max, nil)
}

// ReadAllFunc is ReadAll calling arrived (if not nil), as leaves come, with
// the content known so far from its start: a prefix of what it returns,
// longer each time, without the last leaf (whose padding is removed at
// the end). Its bytes never change afterwards; its capacity is the most
// the content can hold. arrived runs in the goroutine of a fetch, one call
// at a time, and must not block.
func (r *Reader) ReadAllFunc(ctx context.Context, max int64, arrived func(prefix []byte)) ([]byte, error) {
	bs := int64(r.rc.BlockSize())
	level := r.rc.Level()
	blocks := []pair{{ref: r.rc.Root(), key: r.rc.RootKey()}}
	for l := level; l >= 1; l-- {
		// Every node but the last of a level is full (spec §2.3), so
		// the content is at least this long.
		if tooLong(len(blocks), int64(r.arity), l, bs, max) {
			return nil, fmt.Errorf("eris: read %s: %w: %d nodes at level %d hold more than %d bytes", r.rc, ErrTooLarge, len(blocks), l, max)
		}
		kids := make([][]pair, len(blocks))
		err := r.each(ctx, len(blocks), func(ctx context.Context, i int) error {
			node, err := r.fetch(ctx, blocks[i], l)
			if err != nil {
				return err
			}
			n := children(node)
			if i < len(blocks)-1 && n != r.arity {
				return corrupt(blocks[i].ref, "internal node at level %d has %d children but is not the rightmost", l, n)
			}
			ps := make([]pair, n)
			for j := range ps {
				ps[j].set(node[j*64:])
			}
			kids[i] = ps
			return nil
		})
		if err != nil {
			return nil, err
		}
		next := make([]pair, 0, (len(blocks)-1)*r.arity+len(kids[len(kids)-1]))
		for _, ps := range kids {
			next = append(next, ps...)
		}
		blocks = next
	}
	if tooLong(len(blocks), 1, 0, bs, max) {
		return nil, fmt.Errorf("eris: read %s: %w: %d leaves hold more than %d bytes", r.rc, ErrTooLarge, len(blocks), max)
	}
	buf := make([]byte, int64(len(blocks))*bs)
	var (
		mu   sync.Mutex
		done = make([]bool, len(blocks))
		next int // leaves before it are here
	)
	err := r.each(ctx, len(blocks), func(ctx context.Context, i int) error {
		b, err := r.fetch(ctx, blocks[i], 0)
		if err != nil {
			return err
		}
		copy(buf[int64(i)*bs:], b)
		if arrived == nil {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		done[i] = true
		from := next
		for next < len(blocks)-1 && done[next] {
			next++
		}
		if next > from {
			arrived(buf[:int64(next)*bs])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	last := int64(len(blocks) - 1)
	n, err := unpad(blocks[last].ref, buf[last*bs:])
	if err != nil {
		return nil, err
	}
	size := last*bs + int64(n)
	if size > max {
		return nil, fmt.Errorf("eris: read %s: %w: %d bytes (limit %d)", r.rc, ErrTooLarge, size, max)
	}
	r.size.Store(size)
	return buf[:size], nil
}

// tooLong reports whether content whose tree has nodes blocks at level is
// longer than max bytes for sure: every node but the last is full (arity
// children, down to the leaves), and the last leaf may hold no content, so
// the content is at least (nodes-1)·arity^level leaves of bs bytes.
func tooLong(nodes int, arity int64, level int, bs, max int64) bool {
	n := int64(nodes - 1)
	for range level {
		if n > max/arity {
			return true
		}
		n *= arity
	}
	return n > max/bs
}

// each runs f for 0..n-1, at most readAllConcurrency at once, in order of
// i as far as it can: worker w takes w, w+workers, …
func (r *Reader) each(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	if n == 1 {
		return f(ctx, 0)
	}
	workers := min(readAllConcurrency, n)
	g, gctx := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			for i := w; i < n; i += workers {
				if err := f(gctx, i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}
