package eris

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/blake2b"
	"golang.org/x/sync/errgroup"
)

// ReaderOptions configure a Reader. The zero value is useful.
type ReaderOptions struct {
	// Nodes caches decrypted internal nodes; share one between the readers
	// of a mount. Nil gives the reader a small cache of its own.
	Nodes *NodeCache
	// Concurrency bounds the leaves one ReadAt fetches at once; 0 means 16.
	Concurrency int
	// GetterVerifies says the getter returns only blocks it has verified
	// against their reference (every erismount store and the peer pool
	// do: verification happens where bytes enter the process), so the
	// reader does not hash them again — a third of the CPU of a warm
	// read. Lengths, keys, node layout and padding are still checked.
	// Leave it false for a getter of unknown provenance.
	GetterVerifies bool
}

// NodeCache keeps verified, decrypted internal nodes, bounded in count. It
// is safe for concurrent use.
type NodeCache struct {
	c *lru.Cache[pair, []byte]
}

// NewNodeCache returns a cache holding at most maxBytes of nodes (at least
// 16 nodes).
func NewNodeCache(maxBytes int64) *NodeCache {
	n := int(max(16, maxBytes/BlockSize1K))
	c, _ := lru.New[pair, []byte](n) // n > 0: cannot fail
	return &NodeCache{c: c}
}

// pair is a reference-key pair: which block and how to decrypt it. Nodes are
// cached by pair, not by reference, so a key never meets another's block.
type pair struct {
	ref Ref
	key Key
}

func (p *pair) set(b []byte) {
	copy(p.ref[:], b[:32])
	copy(p.key[:], b[32:64])
}

// Reader reads ERIS content at random offsets, fetching only the blocks on
// the path to the bytes asked for and verifying each one. It implements
// io.ReaderAt, io.ReadSeeker and is safe for concurrent ReadAt calls (Read
// and Seek share an offset and must not be called concurrently).
type Reader struct {
	ctx   context.Context
	rc    ReadCapability
	g     BlockGetter
	nodes *NodeCache
	conc  int
	arity int
	// verified: the getter verifies blocks (ReaderOptions.GetterVerifies).
	verified bool
	off      int64        // Read/Seek position
	size     atomic.Int64 // -1 until known
	// fetching merges concurrent fetches of one node (ReadAts under the
	// same node, WriteTo's chunks in flight), which the node cache alone
	// would let go out once each.
	fetchingMu sync.Mutex
	fetching   map[pair]*nodeFetch
}

// nodeFetch is a fetch of a node others wait for.
type nodeFetch struct {
	done chan struct{}
	node []byte
	err  error
}

// NewReader returns a Reader of the content of rc, fetching blocks from g.
// It fetches nothing until read. ctx bounds the io.Reader and io.ReaderAt
// methods; ReadAtContext and SizeContext take their own.
func NewReader(ctx context.Context, rc ReadCapability, g BlockGetter) (*Reader, error) {
	return NewReaderOptions(ctx, rc, g, ReaderOptions{})
}

// NewReaderOptions is NewReader with options.
func NewReaderOptions(ctx context.Context, rc ReadCapability, g BlockGetter, opts ReaderOptions) (*Reader, error) {
	if rc.IsZero() {
		return nil, fmt.Errorf("eris: new reader: %w: zero capability", ErrMalformed)
	}
	if opts.Nodes == nil {
		opts.Nodes = NewNodeCache(int64(2*(rc.Level()+1)) * int64(rc.BlockSize()))
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	r := &Reader{ctx: ctx, rc: rc, g: g, nodes: opts.Nodes, conc: opts.Concurrency, arity: rc.BlockSize() / 64, verified: opts.GetterVerifies}
	r.size.Store(-1)
	return r, nil
}

// Capability returns the capability the reader reads.
func (r *Reader) Capability() ReadCapability { return r.rc }

// corrupt returns an ErrCorrupt error about ref.
func corrupt(ref Ref, format string, args ...any) error {
	return &BlockError{Ref: ref, Err: fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))}
}

// fetch gets, verifies and decrypts the block of p at level. Internal nodes
// are checked against their key (the spec's Verify-Key: a node's key is its
// hash, which catches manipulated keys and levels) and their layout.
func (r *Reader) fetch(ctx context.Context, p pair, level int) ([]byte, error) {
	if level == 0 {
		return r.fetchBlock(ctx, p, level)
	}
	if n, ok := r.nodes.c.Get(p); ok {
		return n, nil
	}
	r.fetchingMu.Lock()
	if f, ok := r.fetching[p]; ok {
		r.fetchingMu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		if f.err == nil {
			return f.node, nil
		}
		// The first caller's fetch failed (perhaps only its context
		// ended): this caller fetches for itself.
		return r.fetchBlock(ctx, p, level)
	}
	if r.fetching == nil {
		r.fetching = map[pair]*nodeFetch{}
	}
	f := &nodeFetch{done: make(chan struct{})}
	r.fetching[p] = f
	r.fetchingMu.Unlock()
	f.node, f.err = r.fetchBlock(ctx, p, level)
	r.fetchingMu.Lock()
	delete(r.fetching, p)
	r.fetchingMu.Unlock()
	close(f.done)
	return f.node, f.err
}

// fetchBlock is fetch without the node cache or merging.
func (r *Reader) fetchBlock(ctx context.Context, p pair, level int) ([]byte, error) {
	b, err := r.g.GetBlock(ctx, p.ref)
	if err != nil {
		var be *BlockError
		if errors.As(err, &be) {
			return nil, err
		}
		return nil, &BlockError{Ref: p.ref, Err: err}
	}
	// Unless the getter vouches for it, a block is hashed here: a getter
	// is an interface, and a wrong block would be silent corruption.
	if len(b) != r.rc.BlockSize() {
		return nil, corrupt(p.ref, "block of %d bytes, want %d", len(b), r.rc.BlockSize())
	}
	if !r.verified && RefOf(b) != p.ref {
		return nil, corrupt(p.ref, "content does not hash to its reference")
	}
	xorBlock(b, b, &p.key, level)
	if level == 0 {
		return b, nil
	}
	if Key(blake2b.Sum256(b)) != p.key {
		return nil, corrupt(p.ref, "internal node at level %d does not hash to its key (key or level manipulated)", level)
	}
	if err := checkNode(b); err != nil {
		return nil, corrupt(p.ref, "invalid internal node at level %d: %v", level, err)
	}
	r.nodes.c.Add(p, b)
	return b, nil
}

// checkNode enforces the node layout (spec §2.4): pairs up to the first zero
// reference, then only zero bytes; at least one pair.
func checkNode(n []byte) error {
	var zero Ref
	for i := 0; i < len(n); i += 64 {
		if Ref(n[i:i+32]) != zero {
			continue
		}
		if i == 0 {
			return errors.New("no children")
		}
		for _, c := range n[i:] {
			if c != 0 {
				return fmt.Errorf("non-zero bytes after the last pair at offset %d", i)
			}
		}
		return nil
	}
	return nil
}

// children returns how many pairs node n holds.
func children(n []byte) int {
	var zero Ref
	for i := 0; i < len(n); i += 64 {
		if Ref(n[i:i+32]) == zero {
			return i / 64
		}
	}
	return len(n) / 64
}

// leafInfo says where leaf i is and whether it is the last leaf.
type leafInfo struct {
	pair  pair
	last  bool
	found bool
}

// locate walks from the root to leaf i. Only the nodes on the path are
// fetched; whether the leaf is the last one follows from the same nodes.
// pathCache remembers, per level, the last node locate walked through and
// its child count, so the leaves of one read (which share their parents)
// skip the node cache's lock and the scan for the end of the node.
type pathCache [16]struct {
	p    pair
	node []byte
	n    int
}

func (r *Reader) locate(ctx context.Context, i int64, pc *pathCache) (leafInfo, error) {
	level := r.rc.Level()
	p := pair{ref: r.rc.Root(), key: r.rc.RootKey()}
	if level == 0 {
		return leafInfo{pair: p, last: true, found: i == 0}, nil
	}
	// digits of i in base arity, most significant first.
	var digits [16]int
	a := int64(r.arity)
	rest := i
	for l := 0; l < level; l++ {
		digits[level-1-l] = int(rest % a)
		rest /= a
	}
	if rest != 0 {
		return leafInfo{}, nil // beyond what the tree can hold
	}
	rightmost := true // the path so far is the tree's right edge
	for l := level; l >= 1; l-- {
		step := &pc[l]
		if step.node == nil || step.p != p {
			node, err := r.fetch(ctx, p, l)
			if err != nil {
				return leafInfo{}, err
			}
			step.p, step.node, step.n = p, node, children(node)
		}
		node, n := step.node, step.n
		d := digits[level-l]
		if d >= n {
			if !rightmost {
				// A node off the right edge must be full: leaves
				// are packed left to right (spec §2.3).
				return leafInfo{}, corrupt(p.ref, "internal node at level %d has %d children but is not the rightmost", l, n)
			}
			return leafInfo{}, nil
		}
		if d < n-1 {
			rightmost = false
		}
		p.set(node[d*64:])
	}
	return leafInfo{pair: p, last: rightmost, found: true}, nil
}

// unpad returns the length of the content in the last leaf (spec §2.2).
func unpad(ref Ref, leaf []byte) (int, error) {
	for i := len(leaf) - 1; i >= 0; i-- {
		switch leaf[i] {
		case 0:
			continue
		case 0x80:
			return i, nil
		default:
			return 0, corrupt(ref, "invalid padding: byte 0x%02x at %d", leaf[i], i)
		}
	}
	return 0, corrupt(ref, "invalid padding: no 0x80 marker in the last block")
}

// ReadAt implements io.ReaderAt with the reader's context.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(r.ctx, p, off)
}

// ReadAtContext reads len(p) bytes at off. A short read ends with io.EOF.
// The leaves of one read are fetched concurrently.
func (r *Reader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("eris: read at negative offset %d", off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	bs := int64(r.rc.BlockSize())
	first := off / bs
	lastWanted := (off + int64(len(p)) - 1) / bs
	type leafJob struct {
		idx  int64 // the leaf's number
		info leafInfo
		dst  []byte // where this leaf's bytes go in p
		skip int    // bytes of the leaf before dst
	}
	jobs := make([]leafJob, 0, lastWanted-first+1)
	var pc pathCache
	for i := first; i <= lastWanted; i++ {
		info, err := r.locate(ctx, i, &pc)
		if err != nil {
			return 0, err
		}
		if !info.found {
			break
		}
		start := i*bs - off
		skip := 0
		if start < 0 {
			skip = int(-start)
			start = 0
		}
		end := min(int64(len(p)), (i+1)*bs-off)
		jobs = append(jobs, leafJob{idx: i, info: info, dst: p[start:end], skip: skip})
		if info.last {
			break
		}
	}
	if len(jobs) == 0 {
		return 0, io.EOF
	}
	// got[k] is how many bytes job k delivered (less only for the last leaf).
	got := make([]int, len(jobs))
	leaf := func(ctx context.Context, k int) error {
		j := jobs[k]
		b, err := r.fetch(ctx, j.info.pair, 0)
		if err != nil {
			return err
		}
		valid := len(b)
		if j.info.last {
			if valid, err = unpad(j.info.pair.ref, b); err != nil {
				return err
			}
			r.size.Store(j.idx*bs + int64(valid)) // the content ends here
		}
		if j.skip < valid {
			got[k] = copy(j.dst, b[j.skip:valid])
		}
		return nil
	}
	if len(jobs) == 1 {
		// Most reads of a mount touch one leaf: no goroutine.
		if err := leaf(ctx, 0); err != nil {
			return 0, err
		}
	} else {
		// A worker per in-flight fetch, each taking every workers-th
		// leaf: a goroutine per leaf cost more than a 1 KiB leaf itself.
		workers := min(r.conc, len(jobs))
		g, gctx := errgroup.WithContext(ctx)
		for w := range workers {
			g.Go(func() error {
				for k := w; k < len(jobs); k += workers {
					if err := leaf(gctx, k); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return 0, err
		}
	}
	n := 0
	for k, j := range jobs {
		n += got[k]
		if got[k] < len(j.dst) {
			return n, io.EOF
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Size returns the content length with the reader's context.
func (r *Reader) Size() (int64, error) { return r.SizeContext(r.ctx) }

// SizeContext returns the content length: it follows the rightmost path
// of the tree (level nodes and the last leaf, spec "Random access" in our
// notes) once and remembers the answer.
func (r *Reader) SizeContext(ctx context.Context) (int64, error) {
	if s := r.size.Load(); s >= 0 {
		return s, nil
	}
	index, p, err := r.rightmost(ctx)
	if err != nil {
		return 0, err
	}
	leaf, err := r.fetch(ctx, p, 0)
	if err != nil {
		return 0, err
	}
	n, err := unpad(p.ref, leaf)
	if err != nil {
		return 0, err
	}
	size := index*int64(r.rc.BlockSize()) + int64(n)
	r.size.Store(size)
	return size, nil
}

// rightmost follows the rightmost path of the tree's nodes: the index of
// the last leaf and its reference and key. It fetches internal nodes only
// (kept in the node cache).
func (r *Reader) rightmost(ctx context.Context) (int64, pair, error) {
	p := pair{ref: r.rc.Root(), key: r.rc.RootKey()}
	var index int64
	for l := r.rc.Level(); l >= 1; l-- {
		node, err := r.fetch(ctx, p, l)
		if err != nil {
			return 0, pair{}, err
		}
		n := children(node)
		index = index*int64(r.arity) + int64(n-1)
		p.set(node[(n-1)*64:])
	}
	return index, p, nil
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker. Seeking relative to the end fetches the size.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = r.off
	case io.SeekEnd:
		size, err := r.Size()
		if err != nil {
			return r.off, err
		}
		base = size
	default:
		return r.off, fmt.Errorf("eris: seek: invalid whence %d", whence)
	}
	if base+offset < 0 {
		return r.off, fmt.Errorf("eris: seek to negative offset %d", base+offset)
	}
	r.off = base + offset
	return r.off, nil
}

// WriteTo keeps writeToAhead reads of a 32 KiB chunk (a leaf, or 32 of
// 1 KiB) in flight, issued in order, and writes each as soon as it and
// those before it are in: the stream starts after one leaf's round trip,
// and a link stays busy across the whole content. Bigger chunks fetched
// all at once delayed the first byte until the whole chunk had come (a 3
// MB nar over a 20 ms link: 1.3 times its HTTP download with two 2 MiB
// chunks). At most 32 × 32 KiB (1 MiB) waits in memory.
const (
	writeToChunk = 32 << 10
	writeToAhead = 32
)

// WriteTo implements io.WriterTo: it streams the content from the current
// offset to w, fetching the chunks ahead while the earlier ones are written.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	ctx, cancel := context.WithCancel(r.ctx)
	type chunk struct {
		buf  []byte
		n    int
		err  error
		done chan struct{}
	}
	chunks := make(chan *chunk, writeToAhead-1) // and one being written
	free := make(chan []byte, writeToAhead+1)   // buffers written out, for reuse
	var wg sync.WaitGroup
	defer func() {
		cancel() // the readers stop, the producer no longer waits
		wg.Wait()
	}()
	// Chunks are issued up to the size, or while it is not known up to the
	// end of the last leaf, which the nodes of the rightmost path give
	// (the first chunk needs the first of them anyway): a chunk past the
	// end would fetch the last leaf again, once for each such chunk.
	end := r.size.Load()
	if end < 0 {
		index, _, err := r.rightmost(ctx)
		if err != nil {
			return 0, err
		}
		end = (index + 1) * int64(r.rc.BlockSize())
	}
	chunkSize := max(writeToChunk, r.rc.BlockSize())
	wg.Go(func() {
		defer close(chunks)
		for off := r.off; off < end; off += int64(chunkSize) {
			c := &chunk{done: make(chan struct{})}
			select {
			case c.buf = <-free:
			default:
				c.buf = make([]byte, chunkSize)
			}
			select {
			case chunks <- c:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				defer close(c.done)
				c.n, c.err = r.ReadAtContext(ctx, c.buf, off)
			})
		}
	})
	var total int64
	for c := range chunks {
		<-c.done
		if c.n > 0 {
			m, err := w.Write(c.buf[:c.n])
			total += int64(m)
			r.off += int64(m)
			if err != nil {
				return total, err
			}
		}
		if c.err == io.EOF {
			return total, nil
		}
		if c.err != nil {
			return total, c.err
		}
		select {
		case free <- c.buf:
		default:
		}
	}
	return total, ctx.Err()
}
