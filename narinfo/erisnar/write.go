package erisnar

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"sync"

	"erismount/eris"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/nar"
)

// Options configure Write and WriteChecked. The zero value is useful.
type Options struct {
	// ReadAhead is how many files past the one being written are fetched
	// at once; 0 means 128 (a source tree from a CoAP peer on a loaded
	// loopback: 128 took 0.7 times as long as 32, 256 no less).
	ReadAhead int
	// SmallFile is the size up to which a file is read whole ahead of the
	// writer; the first SmallFile bytes of a larger file are read ahead
	// and the rest streamed when its turn comes. 0 means 256 KiB.
	SmallFile int
	// FetchAhead matters when the tree's getter is a cache that says which
	// blocks it holds and reads many at once (cache.Tiered): then the whole
	// tree is planned ahead of the writer (see planner) — the blocks the
	// cache lacks fetched in order, FetchConcurrency at once, while the
	// writer streams what it holds, and held leaves read in bulk.
	// FetchAhead bounds the bytes of missing blocks fetched beyond the
	// file being written; 0 means 32 MiB, negative turns the plan off.
	// Fetched blocks wait in the getter's cache, not here.
	FetchAhead int64
	// FetchConcurrency bounds the missing blocks requested at once; 0
	// means 256 (a peer's whole window: the blocks of a few changed files
	// scattered through a tree need many in flight to fill a link).
	FetchConcurrency int
}

// Memory: at most (ReadAhead + 32) × SmallFile bytes of content (40 MiB by
// default) wait here, plus 8 chunks of 512 KiB of the large file being
// written, plus the plan (a 32-byte reference per leaf of the tree).

func (o Options) withDefaults() Options {
	if o.ReadAhead <= 0 {
		o.ReadAhead = 128
	}
	if o.SmallFile <= 0 {
		o.SmallFile = 256 << 10
	}
	if o.FetchAhead == 0 {
		o.FetchAhead = 32 << 20
	}
	return o
}

// Write writes the nar of t to w and returns its NarHash and NarSize. The
// nar is what nix-store --dump gives for the tree written out: entries in
// byte order, each file's executable bit, symlink targets as they are.
// Every block is verified by the tree's reader; a missing or corrupt block,
// a failure of w or a cancelled ctx stops the nar short with an error.
func Write(ctx context.Context, w io.Writer, t *erisfs.Tree, opts Options) (nar.Sum, error) {
	hw := nar.NewHashingWriter(w)
	if err := write(ctx, hw, t, opts.withDefaults()); err != nil {
		return nar.Sum{}, err
	}
	return hw.Sum(), nil
}

// WriteChecked writes the nar of t to w, checked against the signed
// NarHash and NarSize of n: it fails as soon as the nar grows past NarSize,
// and it holds back the last bytes of the nar until the whole of it is known
// to match. On a mismatch (an error matching narinfo.ErrMismatch) or any
// other error, w has received less than a whole nar; the caller must then
// abort whatever w feeds rather than end it cleanly.
func WriteChecked(ctx context.Context, w io.Writer, t *erisfs.Tree, n *narinfo.Narinfo, opts Options) error {
	c := NewChecked(w, n)
	if err := write(ctx, c, t, opts.withDefaults()); err != nil {
		return err
	}
	return c.Finish()
}

// holdBack is how many bytes at the end of a nar WriteChecked keeps until
// the nar is verified: the closing ")" of the root node, an 8-byte length
// and the padded token (spec §2.1). A nar without them is incomplete to every
// parser, and every nar is longer than this.
const holdBack = 16

// Checked passes a nar on to a writer, hashing it, except for the last
// holdBack bytes, which Finish writes only if the whole nar matched the
// signed NarHash and NarSize: whatever the nar came from (a tree, a
// decompressed download), the writer never receives a whole wrong nar.
// Write fails (narinfo.ErrMismatch) as soon as the nar grows past NarSize.
type Checked struct {
	w         io.Writer
	storePath string
	want      nar.Sum
	h         hash.Hash
	n         int64
	held      []byte
	failed    error
}

// NewChecked returns a Checked writing to w the nar of n.
func NewChecked(w io.Writer, n *narinfo.Narinfo) *Checked {
	return &Checked{w: w, storePath: n.StorePath, want: n.Sum(), h: sha256.New()}
}

// Write hashes p and passes on all but the last bytes seen.
func (c *Checked) Write(p []byte) (int, error) {
	if c.failed != nil {
		return 0, c.failed
	}
	if c.n+int64(len(p)) > c.want.Size {
		c.failed = &narinfo.MismatchError{StorePath: c.storePath, Want: c.want, Got: nar.Sum{Size: c.n + int64(len(p))}}
		return 0, c.failed
	}
	c.h.Write(p)
	c.n += int64(len(p))
	// Pass on everything but the last holdBack bytes of held+p.
	var out []byte
	if len(p) >= holdBack {
		if len(c.held) > 0 {
			if err := c.send(c.held); err != nil {
				return 0, err
			}
		}
		out = p[:len(p)-holdBack]
		c.held = append(c.held[:0], p[len(p)-holdBack:]...)
	} else {
		c.held = append(c.held, p...)
		if over := len(c.held) - holdBack; over > 0 {
			out = append([]byte(nil), c.held[:over]...)
			c.held = append(c.held[:0], c.held[over:]...)
		}
	}
	if len(out) > 0 {
		if err := c.send(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *Checked) send(b []byte) error {
	if _, err := c.w.Write(b); err != nil {
		c.failed = err
		return err
	}
	return nil
}

// Finish compares the nar with the narinfo and, if they match, writes the
// bytes held back; else it returns a *narinfo.MismatchError.
func (c *Checked) Finish() error {
	if c.failed != nil {
		return c.failed
	}
	var got nar.Sum
	c.h.Sum(got.Hash[:0])
	got.Size = c.n
	if got != c.want {
		c.failed = &narinfo.MismatchError{StorePath: c.storePath, Want: c.want, Got: got}
		return c.failed
	}
	return c.send(c.held)
}

// file is a file's content being fetched ahead of the writer.
type file struct {
	e    *erisfs.Entry
	g    eris.BlockGetter // the blocks read ahead for it; nil: the tree's getter
	done chan struct{}
	// Set before done is closed:
	data []byte       // the content, or its first part when size is larger
	size int64        // the whole content's length
	r    *eris.Reader // reads the rest when size > len(data)
	err  error
}

// fetch reads f's content, or its first part, and its size. A read into a
// buffer as large as the content could be gives both in one go: the eris
// reader stops at the last leaf.
func (f *file) fetch(ctx context.Context, t *erisfs.Tree, small int) {
	defer close(f.done)
	r, err := t.OpenVia(ctx, f.e, f.g)
	if err != nil {
		f.err = err
		return
	}
	// As large as the content can be (the capability bounds it), at most small.
	buf := make([]byte, min(f.e.Capability().MaxSize(), int64(small)))
	n, err := r.ReadAtContext(ctx, buf, 0)
	switch {
	case err == io.EOF:
		f.data, f.size = buf[:n], int64(n)
		return
	case err != nil:
		f.err = err
		return
	}
	f.data, f.r = buf, r
	f.size, f.err = t.Size(ctx, f.e)
	if f.err == nil && f.size < int64(n) {
		f.err = fmt.Errorf("%w: content of %q is shorter than its first %d bytes", eris.ErrCorrupt, f.e.Path(), n)
	}
}

var kinds = map[erisfs.Kind]nar.Type{
	erisfs.Regular:    nar.Regular,
	erisfs.Executable: nar.Executable,
	erisfs.Symlink:    nar.Symlink,
	erisfs.Directory:  nar.Directory,
}

// write writes the nar of t to w, the files fetched opts.ReadAhead ahead.
// The tree's Ino order is nar order: a walk in byte order, each directory
// before its entries (spec §2.1).
func write(ctx context.Context, w io.Writer, t *erisfs.Tree, opts Options) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	ahead := make(chan *file, opts.ReadAhead)
	var win *window
	if loc, ok := t.Getter().(local); ok && opts.FetchAhead > 0 {
		win = newWindow(opts.FetchAhead)
		p := &planner{t: t, loc: loc, opts: opts, win: win}
		wg.Go(func() { p.run(ctx, &wg, ahead) })
	} else {
		wg.Go(func() {
			defer close(ahead)
			for e := range t.All() {
				if !e.Kind().IsFile() {
					continue
				}
				f := &file{e: e, done: make(chan struct{})}
				select {
				case ahead <- f:
				case <-ctx.Done():
					return
				}
				wg.Go(func() { f.fetch(ctx, t, opts.SmallFile) })
			}
		})
	}

	nw := nar.NewWriter(w)
	for e := range t.All() {
		h := &nar.Header{Path: e.Path(), Type: kinds[e.Kind()], LinkTarget: e.Target()}
		if !e.Kind().IsFile() {
			if err := nw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		f, ok := <-ahead
		if !ok { // the reader stopped: ctx ended
			return context.Cause(ctx)
		}
		<-f.done // fetch honours ctx
		if f.err != nil {
			return fmt.Errorf("erisnar: %s: %w", displayPath(e.Path()), f.err)
		}
		h.Size = f.size
		if err := nw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := nw.Write(f.data); err != nil {
			return err
		}
		if int64(len(f.data)) < f.size {
			if err := copyAhead(ctx, nw, f.r, int64(len(f.data)), f.size); err != nil {
				return fmt.Errorf("erisnar: %s: %w", displayPath(e.Path()), err)
			}
		}
		f.data = nil
		win.pass(e.Ino())
	}
	return nw.Close()
}

// Large files are read in chunks, several at once: each ReadAtContext
// fetches one chunk's leaves concurrently, and a peer over CoAP/UDP sends
// a 32 KiB block in 32 sequential exchanges, so keeping many leaves in
// flight is what makes a cold read fast.
const (
	chunkSize   = 512 << 10
	chunksAhead = 8
)

// copyAhead writes the content of r from off to end to w, reading up to
// chunksAhead chunks ahead.
func copyAhead(ctx context.Context, w io.Writer, r *eris.Reader, off, end int64) error {
	ctx, cancel := context.WithCancel(ctx)
	type chunk struct {
		buf  []byte
		err  error
		done chan struct{}
	}
	chunks := make(chan *chunk, chunksAhead)
	var wg sync.WaitGroup
	defer func() {
		cancel() // the readers stop, the producer no longer waits
		wg.Wait()
	}()
	wg.Go(func() {
		defer close(chunks)
		for at := off; at < end; at += chunkSize {
			c := &chunk{buf: make([]byte, min(chunkSize, end-at)), done: make(chan struct{})}
			select {
			case chunks <- c:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				defer close(c.done)
				n, err := r.ReadAtContext(ctx, c.buf, at)
				if err == io.EOF && n < len(c.buf) || err == nil && n < len(c.buf) {
					err = io.ErrUnexpectedEOF // the content is shorter than its size
				} else if err == io.EOF {
					err = nil
				}
				c.err = err
			})
		}
	})
	for c := range chunks {
		<-c.done
		if c.err != nil {
			return c.err
		}
		if _, err := w.Write(c.buf); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func displayPath(p string) string {
	if p == "" {
		return "the root"
	}
	return p
}

// window keeps the fetch of missing blocks at most max bytes ahead of the
// writer: a file's missing bytes count from when they are admitted until
// the writer has passed the file.
type window struct {
	mu      sync.Mutex
	max     int64
	used    int64
	pending []admitted // in Ino order
	passed  uint64     // the last file the writer has written
	waiting bool
	wake    chan struct{} // closed when the writer passes a file while someone waits
}

type admitted struct {
	ino   uint64
	bytes int64
}

func newWindow(max int64) *window {
	return &window{max: max, wake: make(chan struct{})}
}

// admit waits until the n bytes of e fit in the window (or it is empty,
// for a file larger than the window) or the writer has passed e.
func (w *window) admit(ctx context.Context, e *erisfs.Entry, n int64) error {
	for {
		w.mu.Lock()
		if e.Ino() <= w.passed {
			w.mu.Unlock()
			return nil
		}
		if w.used == 0 || w.used+n <= w.max {
			w.used += n
			w.pending = append(w.pending, admitted{e.Ino(), n})
			w.mu.Unlock()
			return nil
		}
		w.waiting = true
		wake := w.wake
		w.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// pass says the writer has written the file numbered ino.
func (w *window) pass(ino uint64) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.passed = ino
	i := 0
	for ; i < len(w.pending) && w.pending[i].ino <= ino; i++ {
		w.used -= w.pending[i].bytes
	}
	w.pending = w.pending[i:]
	if w.waiting && i > 0 {
		w.waiting = false
		close(w.wake)
		w.wake = make(chan struct{})
	}
}
