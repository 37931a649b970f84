package cache_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"erismount/cache"
	"erismount/eris"
)

func TestMemoryEvictsLeastRecentlyUsed(t *testing.T) {
	ctx := context.Background()
	bs := blocks(1, 5, eris.BlockSize1K)
	m := cache.NewMemory(3 * eris.BlockSize1K)
	putAll(t, m, bs[:3])
	if _, err := m.GetBlock(ctx, bs[0].ref); err != nil { // 0 is now the most recent
		t.Fatal(err)
	}
	putAll(t, m, bs[3:4]) // evicts 1, the least recently used
	want := []bool{true, false, true, true, false}
	for i, b := range bs {
		if got := m.Has(b.ref); got != want[i] {
			t.Errorf("Has(block %d) = %v, want %v", i, got, want[i])
		}
	}
	if m.Len() != 3 || m.Bytes() != 3*eris.BlockSize1K {
		t.Errorf("Len, Bytes = %d, %d; want 3, %d", m.Len(), m.Bytes(), 3*eris.BlockSize1K)
	}
	// Has does not make a block recent: 2 is the oldest now and goes next.
	m.Has(bs[2].ref)
	putAll(t, m, bs[4:5])
	if m.Has(bs[2].ref) || !m.Has(bs[4].ref) {
		t.Error("Has changed the eviction order, or the put was not kept")
	}
}

func TestMemoryBound(t *testing.T) {
	big := blocks(10, 1, eris.BlockSize32K)
	small := blocks(20, 40, eris.BlockSize1K)
	tests := []struct {
		name      string
		max       int64
		put       []testBlock
		wantLen   int
		wantBytes int64
	}{
		{"zero holds nothing", 0, small[:1], 0, 0},
		{"negative holds nothing", -1, small[:1], 0, 0},
		{"block larger than bound", eris.BlockSize32K - 1, big, 0, 0},
		{"exact fit", eris.BlockSize32K, big, 1, eris.BlockSize32K},
		{"a 32 KiB block evicts 32 small ones", eris.BlockSize32K + 8*eris.BlockSize1K, append(small[:40:40], big...), 9, eris.BlockSize32K + 8*eris.BlockSize1K},
		{"same block twice counts once", 4 * eris.BlockSize1K, []testBlock{small[0], small[0], small[1]}, 2, 2 * eris.BlockSize1K},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := cache.NewMemory(tc.max)
			putAll(t, m, tc.put)
			if m.Len() != tc.wantLen || m.Bytes() != tc.wantBytes {
				t.Errorf("Len, Bytes = %d, %d; want %d, %d", m.Len(), m.Bytes(), tc.wantLen, tc.wantBytes)
			}
			if m.Bytes() > max(tc.max, 0) {
				t.Errorf("Bytes %d above the bound %d", m.Bytes(), tc.max)
			}
		})
	}
}

func TestMemoryRefusesBadSize(t *testing.T) {
	m := cache.NewMemory(1 << 20)
	b := make([]byte, 100)
	err := m.PutBlock(context.Background(), eris.RefOf(b), b)
	if !errors.Is(err, eris.ErrCorrupt) || m.Len() != 0 {
		t.Errorf("PutBlock of 100 bytes: %v, Len %d; want ErrCorrupt and nothing kept", err, m.Len())
	}
}

// TestMemoryConcurrent puts, gets and evicts from many goroutines (run with
// -race); the bound and the byte count stay true throughout.
func TestMemoryConcurrent(t *testing.T) {
	ctx := context.Background()
	bs := blocks(100, 300, eris.BlockSize1K)
	const bound = 50 * eris.BlockSize1K
	m := cache.NewMemory(bound)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 0))
			for range 2000 {
				b := bs[r.IntN(len(bs))]
				if r.IntN(2) == 0 {
					if err := m.PutBlock(ctx, b.ref, b.b); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				got, err := m.GetBlock(ctx, b.ref)
				switch {
				case errors.Is(err, eris.ErrNotFound):
				case err != nil:
					t.Error(err)
					return
				case string(got) != string(b.b):
					t.Errorf("GetBlock(%s) returned other bytes", b.ref.Str())
					return
				default:
					got[0] ^= 1 // the caller owns it
				}
				if n := m.Bytes(); n > bound {
					t.Errorf("Bytes %d above the bound %d", n, bound)
					return
				}
			}
		})
	}
	wg.Wait()
	if m.Bytes() != int64(m.Len())*eris.BlockSize1K {
		t.Errorf("Bytes %d, but %d blocks of 1 KiB held", m.Bytes(), m.Len())
	}
}
