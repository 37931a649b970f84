package eris_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
)

// encodeRandom encodes size random bytes and returns them with the store.
func encodeRandom(t testing.TB, size int64, bs int, seed uint64) ([]byte, eris.ReadCapability, *eristest.Store) {
	t.Helper()
	content := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range content {
		content[i] = byte(rng.Uint32())
	}
	s := eristest.NewStore()
	rc, err := eris.Encode(context.Background(), bytes.NewReader(content), s, eris.EncodeOptions{BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	return content, rc, s
}

// boundarySizes are content sizes around block and level boundaries.
func boundarySizes(bs int) []int64 {
	arity := int64(bs / 64)
	var sizes []int64
	edges := []int64{0, int64(bs), int64(bs) * arity}
	if bs == eris.BlockSize1K {
		edges = append(edges, int64(bs)*arity*arity) // 32 KiB: 8 GiB, too big here
	}
	for _, edge := range edges {
		for _, d := range []int64{-1, 0, 1} {
			if edge+d >= 0 {
				sizes = append(sizes, edge+d)
			}
		}
	}
	if bs == eris.BlockSize1K {
		sizes = append(sizes, 3*int64(bs)*arity*arity+12345) // level 3
	}
	return sizes
}

func TestReadAtRandom(t *testing.T) {
	for _, bs := range []int{eris.BlockSize1K, eris.BlockSize32K} {
		for _, size := range boundarySizes(bs) {
			t.Run(fmt.Sprintf("bs=%d/size=%d", bs, size), func(t *testing.T) {
				content, rc, s := encodeRandom(t, size, bs, uint64(size))
				r, err := eris.NewReader(context.Background(), rc, s)
				if err != nil {
					t.Fatal(err)
				}
				if got, err := r.Size(); err != nil || got != size {
					t.Fatalf("Size = %d, %v; want %d", got, err, size)
				}
				all, err := io.ReadAll(r)
				if err != nil || !bytes.Equal(all, content) {
					t.Fatalf("ReadAll: %d bytes, %v; want %d equal bytes", len(all), err, size)
				}
				rng := rand.New(rand.NewPCG(uint64(size), 2))
				for range 200 {
					off := rng.Int64N(size + 2)
					n := rng.IntN(3*bs + 2)
					checkReadAt(t, r, content, off, n)
				}
				// Edges: start, end, across the last block.
				for _, off := range []int64{0, size - 1, size, size + 1, size - int64(bs) - 1} {
					if off >= 0 {
						checkReadAt(t, r, content, off, bs+2)
					}
				}
			})
		}
	}
}

func checkReadAt(t *testing.T, r *eris.Reader, content []byte, off int64, n int) {
	t.Helper()
	size := int64(len(content))
	buf := make([]byte, n)
	got, err := r.ReadAt(buf, off)
	want := 0
	if off < size {
		want = int(min(int64(n), size-off))
	}
	if got != want {
		t.Fatalf("ReadAt(%d bytes at %d) = %d, %v; want %d", n, off, got, err, want)
	}
	if want < n && err != io.EOF {
		t.Fatalf("short ReadAt(%d at %d) returned err %v, want io.EOF", n, off, err)
	}
	if want == n && err != nil {
		t.Fatalf("ReadAt(%d at %d): %v", n, off, err)
	}
	if got > 0 && !bytes.Equal(buf[:got], content[off:off+int64(got)]) {
		t.Fatalf("ReadAt(%d at %d) returned wrong bytes", n, off)
	}
}

func TestSeek(t *testing.T) {
	content, rc, s := encodeRandom(t, 100000, eris.BlockSize1K, 7)
	r, _ := eris.NewReader(context.Background(), rc, s)
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{
		{10, io.SeekStart, 10}, {5, io.SeekCurrent, 15}, {-1, io.SeekEnd, 99999}, {0, io.SeekEnd, 100000},
	} {
		pos, err := r.Seek(c.off, c.whence)
		if err != nil || pos != c.want {
			t.Fatalf("Seek(%d, %d) = %d, %v; want %d", c.off, c.whence, pos, err, c.want)
		}
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("Seek to -1 succeeded")
	}
	r.Seek(99990, io.SeekStart)
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, content[99990:]) {
		t.Fatalf("read after seek: %q, %v", rest, err)
	}
}

// TestReadCost proves laziness: on cold content a 1-byte read anywhere costs
// exactly level+1 block fetches, and Size at most level+1 more, once.
func TestReadCost(t *testing.T) {
	for _, bs := range []int{eris.BlockSize1K, eris.BlockSize32K} {
		size := int64(bs) * int64(bs/64) * 3 // level 2
		_, rc, s := encodeRandom(t, size, bs, 3)
		if rc.Level() != 2 {
			t.Fatalf("level %d, want 2", rc.Level())
		}
		rng := rand.New(rand.NewPCG(3, 3))
		for range 20 {
			r, _ := eris.NewReader(context.Background(), rc, s)
			s.ResetCounts()
			off := rng.Int64N(size)
			if _, err := r.ReadAt(make([]byte, 1), off); err != nil {
				t.Fatal(err)
			}
			if got, want := s.Gets(), int64(rc.Level()+1); got != want {
				t.Fatalf("bs %d: 1-byte read at %d cost %d fetches, want %d", bs, off, got, want)
			}
			s.ResetCounts()
			r.Size()
			r.Size()
			if got := s.Gets(); got > int64(rc.Level()+1) {
				t.Fatalf("Size cost %d fetches, want at most %d", got, rc.Level()+1)
			}
		}
	}
}

func TestConcurrentReadAt(t *testing.T) {
	content, rc, s := encodeRandom(t, 3<<20, eris.BlockSize32K, 9)
	r, _ := eris.NewReader(context.Background(), rc, s)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 4))
			for range 50 {
				off := rng.Int64N(int64(len(content)))
				buf := make([]byte, rng.IntN(200000)+1)
				n, err := r.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if !bytes.Equal(buf[:n], content[off:off+int64(n)]) {
					t.Error("wrong bytes")
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestFaults: missing and corrupt blocks give distinct errors naming the
// block, and a corrupt block's bytes never reach the caller.
func TestFaults(t *testing.T) {
	ctx := context.Background()
	content, rc, s := encodeRandom(t, 200000, eris.BlockSize1K, 11)
	r, _ := eris.NewReader(ctx, rc, s)
	n, _ := r.ReadAt(make([]byte, 1), 0) // warm the path to leaf 0
	if n != 1 {
		t.Fatal("warm read failed")
	}
	var leaf0 eris.Ref
	s.Fault = func(ref eris.Ref, b []byte) ([]byte, error) {
		leaf0 = ref
		return b, nil
	}
	r2, _ := eris.NewReader(ctx, rc, s)
	r2.ReadAt(make([]byte, 1), 0)
	_ = leaf0 // the last fetched block of the path is leaf 0

	cases := []struct {
		name  string
		fault func(ref eris.Ref, b []byte) ([]byte, error)
		want  error
	}{
		{"missing", func(ref eris.Ref, b []byte) ([]byte, error) { return nil, eris.NotFound(ref) }, eris.ErrNotFound},
		{"bit flip", func(ref eris.Ref, b []byte) ([]byte, error) { b[100] ^= 1; return b, nil }, eris.ErrCorrupt},
		{"truncated", func(ref eris.Ref, b []byte) ([]byte, error) { return b[:500], nil }, eris.ErrCorrupt},
		{"other block", func(ref eris.Ref, b []byte) ([]byte, error) { return make([]byte, len(b)), nil }, eris.ErrCorrupt},
		{"transport", func(ref eris.Ref, b []byte) ([]byte, error) { return nil, errors.New("connection reset") }, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.Fault = func(ref eris.Ref, b []byte) ([]byte, error) {
				if ref == leaf0 {
					return c.fault(ref, b)
				}
				return b, nil
			}
			defer func() { s.Fault = nil }()
			r, _ := eris.NewReader(ctx, rc, s)
			buf := make([]byte, 2048)
			n, err := r.ReadAt(buf, 0)
			if err == nil {
				t.Fatalf("read %d bytes through a %s block", n, c.name)
			}
			if n != 0 {
				t.Errorf("returned %d bytes with error %v", n, err)
			}
			var be *eris.BlockError
			if !errors.As(err, &be) || be.Ref != leaf0 {
				t.Errorf("error %v does not name block %s", err, leaf0)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("error %v, want %v", err, c.want)
			}
			if c.want == nil && (errors.Is(err, eris.ErrCorrupt) || errors.Is(err, eris.ErrNotFound)) {
				t.Errorf("transport error %v reported as missing or corrupt", err)
			}
			// The rest of the content is still readable.
			if n, err := r.ReadAt(buf, 4096); err != nil || !bytes.Equal(buf[:n], content[4096:4096+n]) {
				t.Errorf("read elsewhere failed: %v", err)
			}
		})
	}
}

func TestContextCancelled(t *testing.T) {
	_, rc, s := encodeRandom(t, 100000, eris.BlockSize1K, 12)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, _ := eris.NewReader(ctx, rc, s)
	if _, err := r.ReadAt(make([]byte, 10), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadAt with cancelled context: %v", err)
	}
	if _, err := eris.Encode(ctx, bytes.NewReader(make([]byte, 1<<20)), s, eris.EncodeOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Encode with cancelled context: %v", err)
	}
}

func TestWriteTo(t *testing.T) {
	for _, tc := range []struct {
		size      int64
		bs        int
		sizeFirst bool // the reader knows the size before WriteTo
	}{
		{0, eris.BlockSize32K, false}, {1, eris.BlockSize32K, false}, {256 << 10, eris.BlockSize32K, false},
		{5 << 20, eris.BlockSize32K, false}, {5<<20 + 777, eris.BlockSize32K, false}, {5<<20 + 777, eris.BlockSize32K, true},
		{1 << 20, eris.BlockSize1K, false}, {300000, eris.BlockSize1K, true},
	} {
		content, rc, s := encodeRandom(t, tc.size, tc.bs, uint64(tc.size)+5)
		r, _ := eris.NewReader(context.Background(), rc, s)
		if tc.sizeFirst {
			r.Size()
		}
		r.Seek(min(tc.size, 3), io.SeekStart)
		var out bytes.Buffer
		n, err := r.WriteTo(&out)
		if err != nil || n != int64(out.Len()) || !bytes.Equal(out.Bytes(), content[min(tc.size, 3):]) {
			t.Fatalf("%+v: WriteTo = %d, %v; content equal: %v", tc, n, err, bytes.Equal(out.Bytes(), content[min(tc.size, 3):]))
		}
	}
	// A corrupt block stops the stream with ErrCorrupt.
	_, rc, s := encodeRandom(t, 5<<20, eris.BlockSize32K, 99)
	s.Fault = func(ref eris.Ref, b []byte) ([]byte, error) { b[7] ^= 0x40; return b, nil }
	r, _ := eris.NewReader(context.Background(), rc, s)
	if _, err := r.WriteTo(io.Discard); !errors.Is(err, eris.ErrCorrupt) {
		t.Fatalf("WriteTo over corrupt blocks: %v", err)
	}
}

func TestWalk(t *testing.T) {
	for _, size := range []int64{0, 5000, 300000} {
		_, rc, s := encodeRandom(t, size, eris.BlockSize1K, 42)
		seen := map[eris.Ref]bool{}
		err := eris.Walk(context.Background(), rc, s, func(ref eris.Ref, level int) error {
			seen[ref] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Random content has no duplicate blocks: the walk sees them all.
		if len(seen) != s.Len() {
			t.Fatalf("size %d: walk saw %d blocks, store has %d", size, len(seen), s.Len())
		}
	}
}

// TestGetterVerifies: with a getter that vouches for its blocks the reader
// skips its own hash but still checks keys and node layout, so a corrupt
// internal node is still refused.
func TestGetterVerifies(t *testing.T) {
	ctx := context.Background()
	content, rc, s := encodeRandom(t, 3<<20, eris.BlockSize32K, 21)
	r, _ := eris.NewReaderOptions(ctx, rc, s, eris.ReaderOptions{GetterVerifies: true})
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("ReadAll: %v", err)
	}
	s.Fault = func(ref eris.Ref, b []byte) ([]byte, error) {
		if ref == rc.Root() {
			b[5] ^= 1
		}
		return b, nil
	}
	r, _ = eris.NewReaderOptions(ctx, rc, s, eris.ReaderOptions{GetterVerifies: true})
	if _, err := r.ReadAt(make([]byte, 10), 0); !errors.Is(err, eris.ErrCorrupt) {
		t.Fatalf("corrupt root node read with GetterVerifies: %v", err)
	}
}

// TestWriteToFetchesEachBlockOnce: streaming content of unknown size
// asks for every block once, however many chunks are in flight when the
// end is reached (a chunk past the end used to fetch the last leaf again).
func TestWriteToFetchesEachBlockOnce(t *testing.T) {
	for _, c := range []struct {
		size int64
		bs   int
	}{
		{134*eris.BlockSize32K - 3000, eris.BlockSize32K}, // level 1
		{5*eris.BlockSize32K + 7, eris.BlockSize32K},
		{600 * eris.BlockSize32K, eris.BlockSize32K}, // level 2: chunks in flight share nodes
		{40*eris.BlockSize1K + 1, eris.BlockSize1K},  // level 2
		{100, eris.BlockSize32K},                     // one leaf, level 0
	} {
		content, rc, s := encodeRandom(t, c.size, c.bs, 11)
		blocks := int64(s.Len())
		s.ResetCounts()
		r, err := eris.NewReader(t.Context(), rc, s)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if n, err := r.WriteTo(&buf); err != nil || n != c.size || !bytes.Equal(buf.Bytes(), content) {
			t.Fatalf("%d bytes in %d-byte blocks: wrote %d, %v", c.size, c.bs, n, err)
		}
		if got := s.Gets(); got != blocks {
			t.Errorf("%d bytes in %d-byte blocks: %d gets for %d blocks", c.size, c.bs, got, blocks)
		}
	}
}
