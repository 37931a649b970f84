// Package cachetest is a conformance suite for eris.BlockStore
// implementations: every store in package cache runs it, and so should
// network clients (CoAP, HTTP) against a live server, so that each honours
// the same contract (see eris.BlockGetter and eris.BlockPutter):
//
//   - a missing block gives an error matching eris.ErrNotFound that names
//     the reference;
//   - a block put can be got back, byte for byte, at once (read your
//     writes), for both block sizes;
//   - the caller owns what GetBlock returns, and the store does not keep
//     the slice given to PutBlock;
//   - puts are idempotent, and blocks that are not 1 KiB or 32 KiB are
//     refused and never served;
//   - a cancelled context gives context.Canceled or the right answer, and
//     never hangs;
//   - all of it holds under concurrent use (run with -race).
//
// Use it from a test, with a constructor that returns a new, empty store
// and registers its cleanup with t.Cleanup:
//
//	func TestConformance(t *testing.T) {
//		cachetest.Run(t, func(t *testing.T) eris.BlockStore {
//			s, err := cache.OpenSQLite(filepath.Join(t.TempDir(), "b.sqlite"), cache.SQLiteOptions{})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		}, cachetest.Options{})
//	}
package cachetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"erismount/eris"
)

// Options adjust the suite to what a store promises beyond the contract.
type Options struct {
	// VerifiesPuts: the store checks that a put block hashes to its
	// reference (a server taking blocks from peers must), so a mismatched
	// put fails with eris.ErrCorrupt and is never served. Stores that trust
	// their caller, as eris.BlockPutter allows, leave it false.
	VerifiesPuts bool
	// Timeout bounds each operation of the suite; 0 means 10 s. A store
	// that takes longer is reported as hanging.
	Timeout time.Duration
	// Blocks is how many blocks the bulk and concurrency tests use; 0
	// means 200. Lower it for slow transports.
	Blocks int
}

// Block returns a deterministic pseudo-random block of size bytes (1024
// or 32768) made from seed, and its reference. Different seeds give
// different blocks.
func Block(seed uint64, size int) (eris.Ref, []byte) {
	r := rand.New(rand.NewPCG(seed, uint64(size)))
	b := make([]byte, size)
	for i := 0; i < size; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < size; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return eris.RefOf(b), b
}

// Run runs the suite as subtests of t. newStore is called once per
// subtest and must return an empty store.
func Run(t *testing.T, newStore func(t *testing.T) eris.BlockStore, opts Options) {
	t.Helper()
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Blocks <= 0 {
		opts.Blocks = 200
	}
	s := suite{newStore: newStore, opts: opts}
	tests := []struct {
		name string
		run  func(*testing.T)
	}{
		{"Missing", s.missing},
		{"PutGet", s.putGet},
		{"CallerOwnsResult", s.callerOwnsResult},
		{"PutDoesNotRetain", s.putDoesNotRetain},
		{"PutTwice", s.putTwice},
		{"BadSize", s.badSize},
		{"Mismatch", s.mismatch},
		{"Many", s.many},
		{"Concurrent", s.concurrent},
		{"Cancelled", s.cancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
}

type suite struct {
	newStore func(t *testing.T) eris.BlockStore
	opts     Options
}

func (s suite) ctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), s.opts.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// put stores block and fails the test on error.
func put(t *testing.T, ctx context.Context, st eris.BlockStore, ref eris.Ref, b []byte) {
	t.Helper()
	if err := st.PutBlock(ctx, ref, b); err != nil {
		t.Fatalf("PutBlock(%s, %d bytes): %v", ref.Str(), len(b), err)
	}
}

// mustGet gets ref and checks it is want.
func mustGet(t *testing.T, ctx context.Context, st eris.BlockGetter, ref eris.Ref, want []byte) []byte {
	t.Helper()
	got, err := st.GetBlock(ctx, ref)
	if err != nil {
		t.Fatalf("GetBlock(%s) after PutBlock: %v", ref.Str(), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("GetBlock(%s) returned %d bytes that differ from the %d put", ref.Str(), len(got), len(want))
	}
	return got
}

// checkMissing checks that ref is reported missing properly.
func checkMissing(t *testing.T, ctx context.Context, st eris.BlockGetter, ref eris.Ref) {
	t.Helper()
	b, err := st.GetBlock(ctx, ref)
	switch {
	case err == nil:
		t.Fatalf("GetBlock(%s) of a missing block returned %d bytes and no error", ref.Str(), len(b))
	case !errors.Is(err, eris.ErrNotFound):
		t.Fatalf("GetBlock(%s) of a missing block: %v; want an error matching eris.ErrNotFound", ref.Str(), err)
	case !strings.Contains(err.Error(), ref.Str()):
		t.Errorf("GetBlock(%s) of a missing block: error %q does not name the reference (use eris.NotFound(ref))", ref.Str(), err)
	}
}

func (s suite) missing(t *testing.T) {
	ctx := s.ctx(t)
	st := s.newStore(t)
	ref, _ := Block(1, eris.BlockSize1K)
	checkMissing(t, ctx, st, ref)
	checkMissing(t, ctx, st, eris.Ref{})
}

func (s suite) putGet(t *testing.T) {
	for _, size := range []int{eris.BlockSize1K, eris.BlockSize32K} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			ctx := s.ctx(t)
			st := s.newStore(t)
			ref, b := Block(2, size)
			put(t, ctx, st, ref, b)
			got := mustGet(t, ctx, st, ref, b)
			if err := ref.Verify(got); err != nil {
				t.Fatal(err)
			}
			other, _ := Block(3, size)
			checkMissing(t, ctx, st, other)
		})
	}
}

func (s suite) callerOwnsResult(t *testing.T) {
	ctx := s.ctx(t)
	st := s.newStore(t)
	ref, b := Block(4, eris.BlockSize1K)
	put(t, ctx, st, ref, b)
	got := mustGet(t, ctx, st, ref, b)
	for i := range got {
		got[i] ^= 0xff // the eris reader decrypts in place like this
	}
	mustGet(t, ctx, st, ref, b)
}

func (s suite) putDoesNotRetain(t *testing.T) {
	ctx := s.ctx(t)
	st := s.newStore(t)
	ref, b := Block(5, eris.BlockSize1K)
	buf := bytes.Clone(b)
	put(t, ctx, st, ref, buf)
	for i := range buf {
		buf[i] = 0 // the encoder reuses its buffers like this
	}
	mustGet(t, ctx, st, ref, b)
}

func (s suite) putTwice(t *testing.T) {
	ctx := s.ctx(t)
	st := s.newStore(t)
	ref, b := Block(6, eris.BlockSize32K)
	put(t, ctx, st, ref, b)
	put(t, ctx, st, ref, b)
	mustGet(t, ctx, st, ref, b)
}

func (s suite) badSize(t *testing.T) {
	for _, n := range []int{0, 1, 1023, 1025, 4096, 32767, 32769, 65536} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ctx := s.ctx(t)
			st := s.newStore(t)
			b := make([]byte, n)
			ref := eris.RefOf(b)
			if err := st.PutBlock(ctx, ref, b); err == nil {
				t.Errorf("PutBlock of %d bytes succeeded; ERIS blocks are 1024 or 32768 bytes", n)
			}
			checkMissing(t, ctx, st, ref)
		})
	}
}

func (s suite) mismatch(t *testing.T) {
	if !s.opts.VerifiesPuts {
		t.Skip("Options.VerifiesPuts is false: the store trusts the reference it is given")
	}
	ctx := s.ctx(t)
	st := s.newStore(t)
	ref, _ := Block(7, eris.BlockSize1K)
	_, other := Block(8, eris.BlockSize1K)
	err := st.PutBlock(ctx, ref, other)
	if !errors.Is(err, eris.ErrCorrupt) {
		t.Errorf("PutBlock of a block under another block's reference: %v; want an error matching eris.ErrCorrupt", err)
	}
	checkMissing(t, ctx, st, ref)
}

func (s suite) many(t *testing.T) {
	ctx := s.ctx(t)
	st := s.newStore(t)
	type blk struct {
		ref eris.Ref
		b   []byte
	}
	blocks := make([]blk, s.opts.Blocks)
	for i := range blocks {
		size := eris.BlockSize1K
		if i%3 == 0 {
			size = eris.BlockSize32K
		}
		blocks[i].ref, blocks[i].b = Block(uint64(1000+i), size)
		put(t, ctx, st, blocks[i].ref, blocks[i].b)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, i := range r.Perm(len(blocks)) {
		mustGet(t, ctx, st, blocks[i].ref, blocks[i].b)
	}
}

// concurrent has writers and readers of overlapping blocks at once; every
// get returns the block or a not-found error, and after the writers are
// done every block is there.
func (s suite) concurrent(t *testing.T) {
	ctx := s.ctx(t)
	st := s.newStore(t)
	const workers = 8
	n := s.opts.Blocks
	refs := make([]eris.Ref, n)
	blocks := make([][]byte, n)
	for i := range refs {
		refs[i], blocks[i] = Block(uint64(5000+i), eris.BlockSize1K)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers)
	for w := range workers {
		wg.Add(2)
		go func() { // writer: every block, in its own order, some twice
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for _, i := range r.Perm(n) {
				if err := st.PutBlock(ctx, refs[i], blocks[i]); err != nil {
					errs <- fmt.Errorf("concurrent PutBlock(%s): %w", refs[i].Str(), err)
					return
				}
			}
		}()
		go func() { // reader
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 2))
			for range n {
				i := r.IntN(n)
				b, err := st.GetBlock(ctx, refs[i])
				switch {
				case errors.Is(err, eris.ErrNotFound):
				case err != nil:
					errs <- fmt.Errorf("concurrent GetBlock(%s): %w", refs[i].Str(), err)
					return
				case !bytes.Equal(b, blocks[i]):
					errs <- fmt.Errorf("concurrent GetBlock(%s) returned other bytes", refs[i].Str())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range refs {
		mustGet(t, ctx, st, refs[i], blocks[i])
	}
}

func (s suite) cancelled(t *testing.T) {
	st := s.newStore(t)
	ref, b := Block(9, eris.BlockSize1K)
	put(t, s.ctx(t), st, ref, b)
	missing, mb := Block(10, eris.BlockSize1K)

	ctx, cancel := context.WithCancel(s.ctx(t))
	cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, r := range []eris.Ref{ref, missing} {
			got, err := st.GetBlock(ctx, r)
			switch {
			case err == nil && r == ref && bytes.Equal(got, b):
			case err == nil:
				t.Errorf("GetBlock(%s) with a cancelled context returned wrong bytes", r.Str())
			case !errors.Is(err, context.Canceled) && !(r == missing && errors.Is(err, eris.ErrNotFound)):
				t.Errorf("GetBlock(%s) with a cancelled context: %v; want the block, not found, or context.Canceled", r.Str(), err)
			}
		}
		err := st.PutBlock(ctx, missing, mb)
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("PutBlock with a cancelled context: %v; want nil or context.Canceled", err)
		}
		if err == nil {
			if got, err := st.GetBlock(context.WithoutCancel(ctx), missing); err != nil || !bytes.Equal(got, mb) {
				t.Errorf("PutBlock with a cancelled context returned nil, but GetBlock(%s) then gives %d bytes, %v", missing.Str(), len(got), err)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(s.opts.Timeout):
		t.Fatalf("GetBlock/PutBlock with a cancelled context did not return within %v", s.opts.Timeout)
	}
}
