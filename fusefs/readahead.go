package fusefs

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"erismount/eris"
)

// raChunk is the unit of our readahead: whole 32 KiB blocks (and so whole
// 1 KiB ones), so that no block is fetched by two chunks, and large enough
// that one chunk keeps the eris reader's concurrent leaf fetches busy.
const raChunk = 1 << 20

// raBusy is how many chunks the whole mount fetches at once. Each chunk
// fetches up to the eris reader's concurrency of leaves in parallel; two
// chunks keep a sequential reader ahead without crowding out the demand
// reads of other files, which never wait for a readahead slot.
const raBusy = 2

// prefetcher holds the budgets every open file's readahead shares.
type prefetcher struct {
	window int64         // most bytes one stream prefetches ahead
	slots  chan struct{} // one token per chunk of memory held
	busy   chan struct{} // one token per chunk being fetched
	st     *counters
	bufs   sync.Pool // *[]byte of raChunk bytes
}

func newPrefetcher(window, memory int64, st *counters) *prefetcher {
	p := &prefetcher{
		window: max(window, 2*raChunk),
		slots:  make(chan struct{}, max(2, memory/raChunk)),
		busy:   make(chan struct{}, raBusy),
		st:     st,
	}
	p.bufs.New = func() any { b := make([]byte, raChunk); return &b }
	return p
}

// try takes a token from sem without waiting.
func try(sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// chunk is raChunk bytes of a file at a multiple of raChunk, fetched ahead
// of its reader. Its buffer and memory slot are released when the last
// reference is dropped: the stream's list, the fetch in flight, and each
// reply that still points into it.
type chunk struct {
	p    *prefetcher
	off  int64
	bufp *[]byte
	n    int   // valid bytes, once done
	err  error // once done
	done chan struct{}
	refs atomic.Int32
}

func (c *chunk) ref() { c.refs.Add(1) }

func (c *chunk) unref() {
	if c.refs.Add(-1) == 0 {
		c.p.bufs.Put(c.bufp)
		<-c.p.slots
	}
}

// stream is the readahead state of one open file.
type stream struct {
	p        *prefetcher
	r        *eris.Reader
	size     int64
	deadline time.Duration
	ctx      context.Context // ends when the file is released
	cancel   context.CancelFunc

	mu     sync.Mutex
	front  int64    // end of the furthest read so far
	run    int64    // bytes read sequentially up to front
	next   int64    // index of the next chunk to prefetch
	chunks []*chunk // in offset order
	closed bool
}

func (p *prefetcher) stream(ctx context.Context, r *eris.Reader, size int64, deadline time.Duration) *stream {
	ctx, cancel := context.WithCancel(ctx)
	return &stream{p: p, r: r, size: size, deadline: deadline, ctx: ctx, cancel: cancel}
}

// part is a range [lo, hi) of a read: served from chunk c, or read on
// demand when c is nil.
type part struct {
	c      *chunk
	lo, hi int64
}

// plan notes a read of [off, end), splits it into the parts prefetched
// chunks cover and the gaps between them (each chunk referenced for the
// caller), and starts more prefetches if the reader is sequential.
func (s *stream) plan(off, end int64) []part {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.track(off, end)
	var parts []part
	at := off
	for _, c := range s.chunks {
		cend := c.off + raChunk
		if cend <= at || c.off >= end {
			continue
		}
		if c.off > at {
			parts = append(parts, part{lo: at, hi: c.off})
			at = c.off
		}
		hi := min(end, cend)
		c.ref()
		parts = append(parts, part{c: c, lo: at, hi: hi})
		at = hi
	}
	if at < end {
		parts = append(parts, part{lo: at, hi: end})
	}
	s.schedule()
	return parts
}

// track updates the sequential run with a read of [off, end). A read near
// the front continues the run (the kernel's async reads arrive a little
// out of order); anything else starts over and drops what was prefetched.
func (s *stream) track(off, end int64) {
	if off <= s.front+raChunk && end >= s.front-4*raChunk {
		if end > s.front {
			s.run += end - max(off, s.front)
			s.front = end
		}
	} else {
		s.run = end - off
		s.front = end
		s.dropAll()
		s.next = 0
	}
	// Chunks well behind the front are done with.
	keep := s.chunks[:0]
	for _, c := range s.chunks {
		if c.off+raChunk <= s.front-2*raChunk {
			c.unref()
			continue
		}
		keep = append(keep, c)
	}
	clear(s.chunks[len(keep):])
	s.chunks = keep
}

// schedule starts prefetching the chunks after the front, as far ahead as
// the run is long (at least two chunks, at most the window), while the
// mount's budgets allow. Called with s.mu held.
func (s *stream) schedule() {
	if s.closed || s.run < raChunk/4 {
		return
	}
	want := min(s.p.window, max(2*raChunk, s.run))
	limit := min(s.size, s.front+want)
	s.next = max(s.next, (s.front+raChunk-1)/raChunk)
	for s.next*raChunk < limit {
		if !try(s.p.slots) {
			return
		}
		if !try(s.p.busy) {
			<-s.p.slots
			return
		}
		c := &chunk{p: s.p, off: s.next * raChunk, bufp: s.p.bufs.Get().(*[]byte), done: make(chan struct{})}
		c.refs.Store(2) // the list's and the fetch's
		s.chunks = append(s.chunks, c)
		s.next++
		go s.fetch(c)
	}
}

// fetch reads chunk c, then keeps the pipeline full.
func (s *stream) fetch(c *chunk) {
	ctx, cancel := context.WithTimeout(s.ctx, s.deadline)
	want := int(min(raChunk, s.size-c.off))
	n, err := s.r.ReadAtContext(ctx, (*c.bufp)[:want], c.off)
	cancel()
	if err == io.EOF && n == want {
		err = nil
	}
	<-s.p.busy
	c.n, c.err = n, err
	if err == nil {
		s.p.st.raBytes.Add(int64(n))
	}
	close(c.done)
	c.unref()
	s.mu.Lock()
	s.schedule()
	s.mu.Unlock()
}

// dropAll forgets every chunk. Called with s.mu held.
func (s *stream) dropAll() {
	for _, c := range s.chunks {
		c.unref()
	}
	clear(s.chunks)
	s.chunks = s.chunks[:0]
}

// close stops the stream's fetches and drops its chunks.
func (s *stream) close() {
	s.cancel()
	s.mu.Lock()
	s.closed = true
	s.dropAll()
	s.mu.Unlock()
}
