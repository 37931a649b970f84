package eris

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/sync/errgroup"
)

// EncodeOptions configure Encode. The zero value encodes public content:
// the null convergence secret, the block size chosen as the spec recommends,
// and one worker per CPU.
type EncodeOptions struct {
	// BlockSize is 1024 or 32768; 0 picks 1 KiB for content smaller than
	// 16 KiB and 32 KiB otherwise (spec §2.1 recommendation), reading at
	// most 16 KiB ahead to decide.
	BlockSize int
	// Secret is the convergence secret; the zero value is the null secret
	// used for public, deduplicating content.
	Secret [32]byte
	// Workers is the number of goroutines hashing and encrypting leaves;
	// 0 means runtime.GOMAXPROCS(0).
	Workers int
}

// Stats describe one encoding.
type Stats struct {
	Size   int64 // content bytes
	Leaves int64 // leaf blocks, padding included
	Blocks int64 // blocks written (leaves + internal nodes, duplicates counted)
}

// batchBytes is how much content one worker job carries: large enough that
// channel hand-offs are rare next to the crypto, small enough that the
// window of batches in flight stays a few MiB.
const batchBytes = 256 << 10

type batch struct {
	seq    int64
	buf    []byte // leaves, padded, encrypted in place by a worker
	leaves int
	pairs  []byte // ref‖key per leaf, filled by the worker
}

// Encode reads r to its end and writes the ERIS encoding of its content as
// blocks through p, returning the read capability.
//
// Leaves are hashed, encrypted and written by opts.Workers goroutines, so p
// must be safe for concurrent use. Memory is bounded by a fixed window of
// batches plus one partial node per tree level, whatever the content size.
// The output is exactly the spec's (§2.3), as the official vectors check.
func Encode(ctx context.Context, r io.Reader, p BlockPutter, opts EncodeOptions) (ReadCapability, error) {
	rc, _, err := EncodeStats(ctx, r, p, opts)
	return rc, err
}

// batchPool recycles batch buffers across encodings: erisfs encodes
// thousands of small files, and a fresh window of buffers per file made
// allocation and clearing dominate publishing.
var batchPool = sync.Pool{New: func() any {
	return &batch{buf: make([]byte, batchBytes), pairs: make([]byte, batchBytes/BlockSize1K*64)}
}}

// fill reads the next batch of leaves from r into b, padding the last one,
// and reports whether the content ended.
func (e *encoder) fill(r io.Reader, b *batch) (last bool, err error) {
	perBatch := max(1, batchBytes/e.bs)
	buf := b.buf[:perBatch*e.bs]
	n, err := io.ReadFull(r, buf)
	e.stats.Size += int64(n)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		// Padding is always added (spec §2.2): 0x80 then zeros to the
		// block boundary, a whole block if n is aligned.
		buf[n] = 0x80
		end := (n/e.bs + 1) * e.bs
		clear(buf[n+1 : end])
		b.leaves = end / e.bs
		return true, nil
	case err != nil:
		return false, fmt.Errorf("eris: encode: read: %w", err)
	}
	b.leaves = perBatch
	return false, nil
}

// EncodeStats is Encode that also reports what was written.
func EncodeStats(ctx context.Context, r io.Reader, p BlockPutter, opts EncodeOptions) (ReadCapability, Stats, error) {
	bs := opts.BlockSize
	first := batchPool.Get().(*batch)
	if bs == 0 {
		// The spec's recommendation (§2.1): 1 KiB below 16 KiB of
		// content. The first batch holds more than that, so reading it
		// decides.
		n, err := io.ReadFull(r, first.buf[:16<<10])
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			bs = BlockSize1K
		case err != nil:
			batchPool.Put(first)
			return ReadCapability{}, Stats{}, fmt.Errorf("eris: encode: read: %w", err)
		default:
			bs = BlockSize32K
		}
		r = io.MultiReader(bytes.NewReader(append([]byte(nil), first.buf[:n]...)), r)
	}
	if !ValidBlockSize(bs) {
		batchPool.Put(first)
		return ReadCapability{}, Stats{}, fmt.Errorf("eris: encode: block size %d, want 1024 or 32768", bs)
	}
	e := &encoder{bs: bs, put: p, secret: opts.Secret}
	last, err := e.fill(r, first)
	if err != nil {
		batchPool.Put(first)
		return ReadCapability{}, Stats{}, err
	}
	if last {
		// Content of one batch (every file below 256 KiB): no
		// goroutines, no hand-offs.
		err := e.sealInline(ctx, first)
		batchPool.Put(first)
		if err != nil {
			return ReadCapability{}, Stats{}, err
		}
		rc, err := e.finish(ctx)
		return rc, e.stats, err
	}
	if err := e.pipeline(ctx, r, first, opts.Workers); err != nil {
		return ReadCapability{}, Stats{}, err
	}
	rc, err := e.finish(ctx)
	return rc, e.stats, err
}

// sealInline seals one batch's leaves and builds the tree above them in
// the calling goroutine.
func (e *encoder) sealInline(ctx context.Context, b *batch) error {
	h, _ := blake2b.New256(e.secret[:]) // 32-byte key: cannot fail
	if err := e.sealLeaves(ctx, h, b); err != nil {
		return err
	}
	for i := range b.leaves {
		if err := e.push(ctx, 1, b.pairs[i*64:i*64+64]); err != nil {
			return err
		}
	}
	return nil
}

// pipeline encodes the leaves of first and of the rest of r on several
// workers: a reader fills batches in order, workers hash, encrypt and write
// their leaves, and this goroutine takes the batches back in order to build
// the tree above them. A window of batches bounds the memory.
func (e *encoder) pipeline(ctx context.Context, r io.Reader, first *batch, workers int) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	window := 2*workers + 2
	slots := make(chan struct{}, window) // a token per batch in flight
	slots <- struct{}{}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan *batch)
	done := make(chan *batch, window)

	g.Go(func() error {
		defer close(jobs)
		b := first
		for seq := int64(0); ; seq++ {
			last := false
			if b == nil {
				select {
				case slots <- struct{}{}:
				case <-gctx.Done():
					return gctx.Err()
				}
				b = batchPool.Get().(*batch)
				var err error
				if last, err = e.fill(r, b); err != nil {
					batchPool.Put(b)
					return err
				}
			}
			b.seq = seq
			select {
			case jobs <- b:
			case <-gctx.Done():
				batchPool.Put(b)
				return gctx.Err()
			}
			if last {
				return nil
			}
			b = nil
		}
	})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		g.Go(func() error {
			defer wg.Done()
			h, _ := blake2b.New256(e.secret[:]) // 32-byte key: cannot fail
			for b := range jobs {
				if err := e.sealLeaves(gctx, h, b); err != nil {
					batchPool.Put(b)
					return err
				}
				done <- b
			}
			return nil
		})
	}
	go func() { wg.Wait(); close(done) }()

	// Internal nodes are few (1/16 or 1/512 of the leaves): this
	// goroutine builds them as batches come back in order.
	pending := make(map[int64]*batch, window)
	var next int64
	var collectErr error
	for b := range done {
		if collectErr != nil {
			batchPool.Put(b)
			continue
		}
		pending[b.seq] = b
		for {
			b, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			for i := range b.leaves {
				if err := e.push(ctx, 1, b.pairs[i*64:i*64+64]); err != nil {
					collectErr = err
					cancel() // stops the reader and workers
					break
				}
			}
			batchPool.Put(b)
			<-slots
		}
	}
	for _, b := range pending {
		batchPool.Put(b)
	}
	err := g.Wait()
	if collectErr != nil {
		return collectErr
	}
	return err
}

type encoder struct {
	bs     int
	put    BlockPutter
	secret [32]byte
	// nodes[l] is the partial internal node at level l (index 0 unused);
	// counts[l] the number of pairs produced at level l so far.
	nodes  [][]byte
	counts []int64
	stats  Stats
	mu     sync.Mutex // guards stats.Blocks from workers
}

// sealLeaves hashes, encrypts and writes every leaf of b.
func (e *encoder) sealLeaves(ctx context.Context, h hash.Hash, b *batch) error {
	var key Key
	for i := range b.leaves {
		leaf := b.buf[i*e.bs : (i+1)*e.bs]
		h.Reset()
		h.Write(leaf)
		h.Sum(key[:0])
		xorBlock(leaf, leaf, &key, 0)
		ref := RefOf(leaf)
		if err := e.put.PutBlock(ctx, ref, leaf); err != nil {
			return fmt.Errorf("eris: encode: put block %s: %w", ref, err)
		}
		copy(b.pairs[i*64:], ref[:])
		copy(b.pairs[i*64+32:], key[:])
	}
	e.mu.Lock()
	e.stats.Blocks += int64(b.leaves)
	e.stats.Leaves += int64(b.leaves)
	e.mu.Unlock()
	return nil
}

// push adds a pair produced at level-1 to the partial node of level, sealing
// and pushing the node upward when it is full.
func (e *encoder) push(ctx context.Context, level int, pair []byte) error {
	for len(e.nodes) <= level {
		e.nodes = append(e.nodes, make([]byte, 0, e.bs))
		e.counts = append(e.counts, 0)
	}
	e.counts[level-1]++
	e.nodes[level] = append(e.nodes[level], pair...)
	if len(e.nodes[level]) < e.bs {
		return nil
	}
	return e.seal(ctx, level)
}

// seal encrypts and writes the partial node at level, zero-filled to the
// block size, and pushes its pair to the level above.
func (e *encoder) seal(ctx context.Context, level int) error {
	node := e.nodes[level][:e.bs]
	clear(node[len(e.nodes[level]):])
	ref, key := sealNode(node, level)
	if err := e.put.PutBlock(ctx, ref, node); err != nil {
		return fmt.Errorf("eris: encode: put node %s: %w", ref, err)
	}
	e.mu.Lock()
	e.stats.Blocks++
	e.mu.Unlock()
	e.nodes[level] = node[:0]
	var pair [64]byte
	copy(pair[:], ref[:])
	copy(pair[32:], key[:])
	return e.push(ctx, level+1, pair[:])
}

// finish seals the partial nodes bottom-up until one pair remains: that
// pair and its level form the capability (spec §2.3 step 3).
func (e *encoder) finish(ctx context.Context) (ReadCapability, error) {
	for level := 1; ; level++ {
		if level >= len(e.nodes) {
			return ReadCapability{}, errors.New("eris: encode: internal error: no root")
		}
		if e.counts[level-1] == 1 && len(e.nodes[level]) == 64 {
			var ref Ref
			var key Key
			copy(ref[:], e.nodes[level][:32])
			copy(key[:], e.nodes[level][32:64])
			return NewReadCapability(e.bs, level-1, ref, key)
		}
		if len(e.nodes[level]) > 0 {
			if err := e.seal(ctx, level); err != nil {
				return ReadCapability{}, err
			}
		}
	}
}
