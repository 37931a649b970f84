package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"erismount/eris"
	"erismount/erisfs"
)

// maxRead is the largest read the kernel sends us (MountOptions.MaxWrite,
// which go-fuse also passes as max_read). Just under 1 MiB: with exactly
// 1 MiB, go-fuse's splice path warned on every read (a header and 1 MiB do
// not fit the 1 MiB pipe).
const maxRead = 1<<20 - 8<<10

// fileNode is a regular or executable file.
type fileNode struct {
	gofs.Inode
	entryNode

	// The range of the last read that timed out, and until when a read
	// overlapping it gets only a short deadline: when readahead fails, the
	// kernel at once retries the page the reader waits for, and without
	// this the reader would wait out the deadline twice. A source that is
	// back answers well within the short one.
	mu          sync.Mutex
	failLo      int64
	failHi      int64
	failedUntil time.Time
}

// failedRecently reports whether [lo, hi) overlaps a read that timed out
// less than a deadline ago.
func (f *fileNode) failedRecently(lo, hi int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return lo < f.failHi && f.failLo < hi && time.Now().Before(f.failedUntil)
}

func (f *fileNode) timedOut(lo, hi int64) {
	f.mu.Lock()
	f.failLo, f.failHi = lo, hi
	f.failedUntil = time.Now().Add(f.m.opts.Deadline)
	f.mu.Unlock()
}

func (f *fileNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	size, errno := f.m.size(ctx, "getattr", f.e)
	if errno != 0 {
		return errno
	}
	f.m.fill(f.e, size, &out.Attr)
	return 0
}

// Open returns a handle with its own readahead. The content never
// changes, so the kernel keeps the pages it has across opens.
func (f *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	if f.m.tra != nil {
		f.m.tra.opened(f.e)
	}
	size, errno := f.m.size(ctx, "open", f.e)
	if errno != 0 {
		return nil, 0, errno
	}
	if f.m.tra != nil {
		f.m.tra.openedExecutable(f.e, size)
	}
	r, err := f.m.tree.Open(f.m.base, f.e)
	if err != nil {
		return nil, 0, f.m.errno("open", f.e, err)
	}
	h := &fileHandle{m: f.m, f: f, e: f.e, r: r, size: size}
	if f.m.ra != nil && size > 2*raChunk {
		h.s = f.m.ra.stream(f.m.base, r, size, f.m.opts.Deadline)
	}
	return h, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0
}

// retryDeadline is the deadline of a read overlapping one that just timed
// out.
func retryDeadline(d time.Duration) time.Duration {
	return max(d/8, 50*time.Millisecond)
}

// fileHandle is an open file.
type fileHandle struct {
	m    *mountFS
	f    *fileNode
	e    *erisfs.Entry
	r    *eris.Reader
	size int64
	s    *stream // nil without readahead
}

// Read answers a read within the operation deadline. The reply points
// into prefetched chunks where they cover the range and into a pooled
// buffer for the rest; it is released once go-fuse has written it.
func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= h.size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	end := min(h.size, off+int64(len(dest)))
	deadline := h.m.opts.Deadline
	if h.f.failedRecently(off, end) {
		deadline = retryDeadline(deadline)
	}
	var rep *reply
	err := h.m.within(ctx, deadline, func(ctx context.Context) error {
		var err error
		rep, err = h.read(ctx, off, end)
		return err
	}, func() {
		if rep != nil {
			rep.Done()
		}
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			h.f.timedOut(off, end)
		}
		return nil, h.m.errno("read", h.e, err)
	}
	h.m.st.reads.Add(1)
	h.m.st.readBytes.Add(int64(rep.Size()))
	return rep, 0
}

// read gathers [off, end) into a reply.
func (h *fileHandle) read(ctx context.Context, off, end int64) (*reply, error) {
	parts := []part{{lo: off, hi: end}}
	if h.s != nil {
		parts = h.s.plan(off, end)
	}
	rep := &reply{m: h.m, n: end - off}
	for i, p := range parts {
		if err := h.readPart(ctx, rep, off, p); err != nil {
			for _, q := range parts[i+1:] {
				if q.c != nil {
					q.c.unref()
				}
			}
			rep.Done()
			return nil, err
		}
	}
	return rep, nil
}

// readPart adds part p of the read starting at off to rep: from its chunk
// if it has one that was fetched, else read on demand.
func (h *fileHandle) readPart(ctx context.Context, rep *reply, off int64, p part) error {
	if p.c != nil {
		if ok, err := h.fromChunk(ctx, rep, p); ok || err != nil {
			return err
		}
	}
	return h.demand(ctx, rep, off, p)
}

// fromChunk adds part p from its chunk to rep once the chunk is fetched,
// handing over p's reference. It reports false (and drops the reference)
// when the chunk failed: the caller then reads the part on demand.
func (h *fileHandle) fromChunk(ctx context.Context, rep *reply, p part) (bool, error) {
	select {
	case <-p.c.done:
	case <-ctx.Done():
		p.c.unref()
		return false, ctx.Err()
	}
	if p.c.err != nil || p.c.off+int64(p.c.n) < p.hi {
		p.c.unref()
		return false, nil
	}
	buf := *p.c.bufp
	rep.add(buf[p.lo-p.c.off:p.hi-p.c.off], p.c)
	h.m.st.raHits.Add(p.hi - p.lo)
	return true, nil
}

// demand reads part p of the read starting at off into the reply's own
// buffer, at the same position it has in the read.
func (h *fileHandle) demand(ctx context.Context, rep *reply, off int64, p part) error {
	buf := rep.buffer()[p.lo-off : p.hi-off]
	n, err := h.r.ReadAtContext(ctx, buf, p.lo)
	if err == io.EOF && n == len(buf) {
		err = nil
	}
	if err == io.EOF {
		// The content ends before the size its own rightmost path gave.
		err = fmt.Errorf("%w: content ends at %d, before its size %d", eris.ErrCorrupt, p.lo+int64(n), h.size)
	}
	if err != nil {
		return err
	}
	rep.add(buf, nil)
	return nil
}

// Release stops the handle's readahead.
func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	if h.s != nil {
		h.s.close()
	}
	return 0
}

// reply is the answer to a read: slices of prefetched chunks and of one
// pooled buffer, written to the kernel with writev (go-fuse's vectored
// path, which also skips its splice attempt) and released in Done.
type reply struct {
	m      *mountFS
	n      int64 // bytes asked for
	vecs   [][]byte
	chunks []*chunk
	buf    []byte  // own buffer, for what no chunk had
	bufp   *[]byte // buf's pool entry, if pooled
}

// buffer returns the reply's own buffer, as long as the read: a pooled one
// of maxRead bytes (the largest read the kernel sends us), or for a larger
// read, which the kernel should never send, a new one.
func (r *reply) buffer() []byte {
	if r.buf == nil {
		if r.n > maxRead {
			r.buf = make([]byte, r.n)
		} else {
			r.bufp = r.m.bufs.Get().(*[]byte)
			r.buf = *r.bufp
		}
	}
	return r.buf
}

// add appends b, which lies in c's buffer when c is not nil.
func (r *reply) add(b []byte, c *chunk) {
	r.vecs = append(r.vecs, b)
	if c != nil {
		r.chunks = append(r.chunks, c)
	}
}

func (r *reply) Size() int {
	n := 0
	for _, v := range r.vecs {
		n += len(v)
	}
	return n
}

// Bytes is the fallback go-fuse uses when it cannot write the slices: it
// copies them into buf.
func (r *reply) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:0]
	for _, v := range r.vecs {
		buf = append(buf, v...)
	}
	return buf, fuse.OK
}

// Slices lets go-fuse write the reply with writev, without a copy.
func (r *reply) Slices() ([][]byte, fuse.Status) { return r.vecs, fuse.OK }

func (r *reply) Done() {
	for _, c := range r.chunks {
		c.unref()
	}
	r.chunks = nil
	if r.bufp != nil {
		r.m.bufs.Put(r.bufp)
		r.bufp = nil
	}
	r.buf = nil
	r.vecs = nil
}
