package eris_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
)

func TestBlockCount(t *testing.T) {
	for _, bs := range []int{eris.BlockSize1K, eris.BlockSize32K} {
		for _, size := range boundarySizes(bs) {
			_, rc, s := encodeRandom(t, size, bs, uint64(size)+77)
			// Random content has no duplicate blocks (except that the
			// zero-length case is one leaf): the store holds them all.
			if got := eris.BlockCount(rc, size); got != int64(s.Len()) {
				t.Errorf("bs %d size %d: BlockCount %d, stored %d", bs, size, got, s.Len())
			}
		}
	}
}

func TestPrefetchAndCountHeld(t *testing.T) {
	ctx := context.Background()
	var caps []eris.ReadCapability
	remote := eristest.NewStore()
	var total int64
	for i, size := range []int64{0, 3000, 70000, 1 << 20} {
		_, rc, s := encodeRandom(t, size, eris.BlockSize1K, uint64(i)+1000)
		for _, ref := range s.Refs() {
			b, _ := s.GetBlock(ctx, ref)
			remote.PutBlock(ctx, ref, b)
		}
		caps = append(caps, rc, rc) // duplicates are fetched once
		total += eris.BlockCount(rc, size)
	}
	local := eristest.NewStore()
	has := func(_ context.Context, ref eris.Ref) (bool, error) {
		_, err := local.GetBlock(ctx, ref)
		return err == nil, nil
	}
	for _, rc := range caps {
		if n, err := eris.CountHeld(ctx, rc, local, has); err != nil || n != 0 {
			t.Fatalf("empty local store: held %d, %v", n, err)
		}
	}
	// A getter that keeps what it fetches, as a tiered cache does.
	keep := getFunc(func(ref eris.Ref) ([]byte, error) {
		b, err := remote.GetBlock(ctx, ref)
		if err == nil {
			local.PutBlock(ctx, ref, b)
		}
		return b, err
	})
	var calls, last int64
	st, err := eris.Prefetch(ctx, caps, keep, eris.PrefetchOptions{Concurrency: 8, Progress: func(done, total int64) {
		calls++
		last = done
		if done > total {
			t.Errorf("progress %d of %d", done, total)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	// The empty content's only leaf is the padding block that also ends the
	// 1 MiB content: distinct blocks are one fewer than the sum of counts.
	if distinct := int64(remote.Len()); st.Blocks != distinct || int64(local.Len()) != distinct || distinct != total-1 {
		t.Fatalf("prefetched %d blocks, local has %d, remote %d, counted %d", st.Blocks, local.Len(), distinct, total)
	}
	if calls == 0 || last == 0 {
		t.Error("no progress reported")
	}
	var held int64
	for _, rc := range everyOther(caps) {
		n, err := eris.CountHeld(ctx, rc, local, has)
		if err != nil {
			t.Fatal(err)
		}
		held += n
	}
	if held != total {
		t.Errorf("held %d after prefetch, want %d", held, total)
	}
	// A missing block fails the prefetch with ErrNotFound.
	remote.Delete(remote.Refs()[0])
	local2 := eristest.NewStore()
	_, err = eris.Prefetch(ctx, caps, getFunc(func(ref eris.Ref) ([]byte, error) {
		b, err := remote.GetBlock(ctx, ref)
		if err == nil {
			local2.PutBlock(ctx, ref, b)
		}
		return b, err
	}), eris.PrefetchOptions{})
	if !errors.Is(err, eris.ErrNotFound) {
		t.Errorf("prefetch with a missing block: %v", err)
	}
}

func everyOther[T any](s []T) []T {
	var out []T
	for i := 0; i < len(s); i += 2 {
		out = append(out, s[i])
	}
	return out
}

// TestBlockCountWalk: the block count computed from a size is the number of
// blocks Walk visits, around every boundary, for content whose leaves
// repeat (zeros): duplicates are counted, as the tree lists them.
func TestBlockCountWalk(t *testing.T) {
	ctx := context.Background()
	store := eristest.NewStore()
	for _, bs := range []int{eris.BlockSize1K, eris.BlockSize32K} {
		arity := bs / 64
		for _, n := range []int{0, 1, bs - 1, bs, bs + 1, arity*bs - 1, arity * bs, arity*bs + 1, 3*arity*bs + 5, arity*arity*bs - 1, arity * arity * bs} {
			if n > 40<<20 {
				continue
			}
			rc, err := eris.Encode(ctx, bytes.NewReader(make([]byte, n)), store, eris.EncodeOptions{BlockSize: bs})
			if err != nil {
				t.Fatal(err)
			}
			walked := int64(0)
			if err := eris.Walk(ctx, rc, store, func(eris.Ref, int) error { walked++; return nil }); err != nil {
				t.Fatal(err)
			}
			if got := eris.BlockCount(rc, int64(n)); got != walked {
				t.Errorf("BlockCount(%d bytes at %d, level %d) = %d, Walk visits %d", n, bs, rc.Level(), got, walked)
			}
		}
	}
}
