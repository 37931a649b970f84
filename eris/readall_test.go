package eris_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"erismount/eris"
	"erismount/eris/eristest"
)

// TestReadAll: the whole content at every block and level boundary, each
// block fetched once, the size known afterwards, and a limit refused
// before the leaves are fetched.
func TestReadAll(t *testing.T) {
	ctx := context.Background()
	for _, bs := range []int{eris.BlockSize1K, eris.BlockSize32K} {
		for _, size := range boundarySizes(bs) {
			t.Run(fmt.Sprintf("bs=%d/size=%d", bs, size), func(t *testing.T) {
				content, rc, s := encodeRandom(t, size, bs, uint64(size))
				r, err := eris.NewReader(ctx, rc, s)
				if err != nil {
					t.Fatal(err)
				}
				s.ResetCounts()
				got, err := r.ReadAll(ctx, size)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != string(content) {
					t.Fatalf("read %d bytes unlike the %d encoded", len(got), len(content))
				}
				if n, want := s.Gets(), eris.BlockCount(rc, size); n != want {
					t.Errorf("fetched %d blocks, the content has %d", n, want)
				}
				s.ResetCounts()
				if n, err := r.Size(); n != size || err != nil || s.Gets() != 0 {
					t.Errorf("Size: %d, %v after %d fetches; want %d at once", n, err, s.Gets(), size)
				}
				if size == 0 {
					return
				}
				r, _ = eris.NewReader(ctx, rc, s)
				if _, err := r.ReadAll(ctx, size-1); !errors.Is(err, eris.ErrTooLarge) {
					t.Errorf("limit %d: error %v, want ErrTooLarge", size-1, err)
				}
				// A limit below what the leaves hold whatever the last
				// one holds is refused before they are fetched.
				leaves := size/int64(bs) + 1
				if leaves < 2 {
					return
				}
				r, _ = eris.NewReader(ctx, rc, s)
				s.ResetCounts()
				limit := (leaves-1)*int64(bs) - 1
				if _, err := r.ReadAll(ctx, limit); !errors.Is(err, eris.ErrTooLarge) {
					t.Errorf("limit %d: error %v, want ErrTooLarge", limit, err)
				}
				if n, nodes := s.Gets(), eris.BlockCount(rc, size)-leaves; n > nodes {
					t.Errorf("limit %d: fetched %d blocks, want at most the %d internal nodes", limit, n, nodes)
				}
			})
		}
	}
}

// waves answers requests in waves: none of the first sizes[0] requests
// until all of them are asked for, then the next sizes[1] alike, …
type waves struct {
	s     *eristest.Store
	sizes []int
	mu    sync.Mutex
	wave  int
	n     int
	open  chan struct{}
}

func (w *waves) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	w.mu.Lock()
	if w.wave == len(w.sizes) {
		w.mu.Unlock()
		return nil, errors.New("more requests than the tree has blocks")
	}
	if w.open == nil {
		w.open = make(chan struct{})
	}
	ch := w.open
	if w.n++; w.n == w.sizes[w.wave] {
		close(ch)
		w.wave, w.n, w.open = w.wave+1, 0, nil
	}
	w.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return nil, fmt.Errorf("wave %d of %v not asked for at once: %w", w.wave, w.sizes, ctx.Err())
	}
	return w.s.GetBlock(ctx, ref)
}

// TestReadAllOneRequestPerLevel: the blocks of a level are asked for
// together, not a window at a time: a getter that answers none of a
// level's blocks until all of them are asked for does not stall ReadAll.
func TestReadAllOneRequestPerLevel(t *testing.T) {
	const leaves = 40 // level 2: 16 + 16 + 8 leaves under 3 nodes
	content, rc, s := encodeRandom(t, leaves*eris.BlockSize1K-1, eris.BlockSize1K, 5)
	if rc.Level() != 2 {
		t.Fatalf("level %d, want 2", rc.Level())
	}
	// A stall shows as this deadline passing (no reader waits this long
	// for blocks held in memory).
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	r, _ := eris.NewReader(ctx, rc, &waves{s: s, sizes: []int{1, 3, leaves}})
	got, err := r.ReadAll(ctx, 1<<20)
	if err != nil || string(got) != string(content) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
}

// TestReadAllFunc: the prefixes given as leaves arrive grow, are prefixes
// of the content, and leave out the last leaf.
func TestReadAllFunc(t *testing.T) {
	ctx := context.Background()
	content, rc, s := encodeRandom(t, 40*eris.BlockSize1K+5, eris.BlockSize1K, 9)
	r, _ := eris.NewReader(ctx, rc, s)
	var last []byte
	calls := 0
	got, err := r.ReadAllFunc(ctx, 1<<20, func(prefix []byte) {
		calls++
		if len(prefix) <= len(last) || len(prefix)%eris.BlockSize1K != 0 || string(prefix) != string(content[:len(prefix)]) {
			t.Errorf("prefix of %d bytes after one of %d: not a longer prefix of whole leaves", len(prefix), len(last))
		}
		last = prefix
	})
	if err != nil || string(got) != string(content) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if calls == 0 || len(last) != 40*eris.BlockSize1K {
		t.Errorf("%d calls, the last with %d bytes; want all but the last leaf, %d bytes", calls, len(last), 40*eris.BlockSize1K)
	}
}
