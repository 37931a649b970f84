package narsource

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"erismount/eris"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/compress"
	"erismount/narinfo/erisnar"
	"erismount/narinfo/source"
)

// ErrNoSource is matched by a *NoSourceError.
var ErrNoSource = errors.New("no source could produce the nar")

// Options configure a Chooser. The zero value serves nothing from ERIS and
// downloads with a client of its own.
type Options struct {
	// Blocks gives the blocks of the tree and of the compressed nar: the
	// cache in front of the peers (cache.Tiered), verified.
	Blocks eris.BlockGetter
	// Local holds the blocks already here (the SQLite store) and Has says
	// whether it holds one; they are only counted, for the choice. Nil
	// counts nothing as local.
	Local eris.BlockGetter
	Has   func(context.Context, eris.Ref) (bool, error)
	// Client downloads upstream nars; nil means source.NewClient().
	Client source.HTTPDoer
	// Nodes caches decrypted internal nodes; nil gives 32 MiB.
	Nodes *eris.NodeCache
	// Nar configures the tree's nar (read-ahead).
	Nar erisnar.Options
	// Force, if set, uses only sources of that kind.
	Force Kind
	// RemoteBytes, if set, returns the bytes of blocks fetched from peers
	// so far (a counter around the pool): a nar's Moved is its growth
	// while the nar streamed — exact when nars do not overlap.
	RemoteBytes func() int64
	// TreeOverhead estimates a tree's blocks from its NarSize when its
	// index is not local; 0 means 1.2 (per-file padding and nodes,
	// measured on source and binary trees).
	TreeOverhead float64
	// FailureMemory is how long a source that failed for an item goes
	// last for it; 0 means 10 minutes.
	FailureMemory time.Duration
	// Logger receives a line per source tried and failed; nil discards.
	Logger *slog.Logger
}

// Extra is what a narinfo may say beyond the fields narinfo.Narinfo has:
// the compressed nar as ERIS content (`ERIS-Nar: <urn> <compression>`).
type Extra struct {
	ERISNar            eris.ReadCapability
	ERISNarCompression string
}

// Attempt is a source tried for a nar.
type Attempt struct {
	Option Option
	URL    string // for Upstream
	Err    error
}

func (a Attempt) String() string {
	if a.URL != "" {
		return fmt.Sprintf("%s %s: %v", a.Option.Kind, a.URL, a.Err)
	}
	return fmt.Sprintf("%s: %v", a.Option.Kind, a.Err)
}

// Result says how a nar was produced.
type Result struct {
	Kind Kind   // the source that produced it ("" if none)
	URL  string // for Upstream: the location
	// Sent is the nar bytes passed to the writer; Moved the bytes that
	// came over the network for it: the compressed download (Upstream),
	// the blocks fetched from peers (Tree, ERISNar; see RemoteBytes).
	Sent, Moved int64
	// Attempts are the sources tried before, that failed.
	Attempts []Attempt
	// Options are the sources in the order they were to be tried.
	Options []Option
}

// NoSourceError is the error when no source could start the nar.
type NoSourceError struct {
	StorePath string
	Attempts  []Attempt
}

func (e *NoSourceError) Error() string {
	if len(e.Attempts) == 0 {
		return fmt.Sprintf("no source for the nar of %s (no ERIS capability, no usable URL)", e.StorePath)
	}
	parts := make([]string, len(e.Attempts))
	for i, a := range e.Attempts {
		parts[i] = a.String()
	}
	return fmt.Sprintf("no source could produce the nar of %s: %s", e.StorePath, strings.Join(parts, "; "))
}

// Is makes a NoSourceError match ErrNoSource.
func (e *NoSourceError) Is(target error) bool { return target == ErrNoSource }

// Timeout reports whether every source tried timed out (a gateway
// timeout, rather than a bad gateway).
func (e *NoSourceError) Timeout() bool {
	for _, a := range e.Attempts {
		if !isTimeout(a.Err) {
			return false
		}
	}
	return len(e.Attempts) > 0
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// Resetter is a writer that may hold the first bytes of a nar before it
// commits them (a server holding them for a clean error status): Reset
// discards what it holds and reports whether nothing went further, in
// which case Write tries the next source as if no byte had been written.
type Resetter interface {
	io.Writer
	Reset() bool
}

// Chooser writes nars from the cheapest source that works.
type Chooser struct {
	opts   Options
	client source.HTTPDoer
	nodes  *eris.NodeCache
	log    *slog.Logger

	mu     sync.Mutex
	failed map[string]map[Kind]time.Time // store path → source → when it failed
}

// New returns a Chooser.
func New(opts Options) *Chooser {
	if opts.TreeOverhead <= 0 {
		opts.TreeOverhead = 1.2
	}
	if opts.FailureMemory <= 0 {
		opts.FailureMemory = 10 * time.Minute
	}
	c := &Chooser{opts: opts, client: opts.Client, nodes: opts.Nodes, log: opts.Logger, failed: map[string]map[Kind]time.Time{}}
	if c.client == nil {
		c.client = source.NewClient()
	}
	if c.nodes == nil {
		c.nodes = eris.NewNodeCache(32 << 20)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Facts gathers what the choice weighs for n: what is local is counted
// from the local index, never fetched.
func (c *Chooser) Facts(ctx context.Context, n *narinfo.Narinfo, x Extra) Facts {
	f := Facts{NarSize: n.NarSize, Locations: n.Locations, Failed: c.recentFailures(n.StorePath)}
	if rc, err := n.Capability(); err == nil && c.opts.Blocks != nil {
		f.Tree = true
		f.TreeBytes = int64(float64(n.NarSize) * c.opts.TreeOverhead)
		if c.opts.Local != nil && c.opts.Has != nil {
			if h, err := c.treeHeld(ctx, rc); err == nil {
				f.TreeBytes, f.TreeHeld, f.TreeExact = h.TotalBytes, h.Bytes, true
			}
		}
	}
	if !x.ERISNar.IsZero() && c.opts.Blocks != nil && usableCompression(x.ERISNarCompression) {
		f.ERISNar = true
		size := n.NarSize
		for _, l := range n.Locations {
			if l.Compression == x.ERISNarCompression && l.FileSize > 0 {
				size = l.FileSize
				break
			}
		}
		f.ERISNarBytes = eris.BlockCount(x.ERISNar, size) * int64(x.ERISNar.BlockSize())
		if c.opts.Local != nil && c.opts.Has != nil {
			if held, err := eris.CountHeld(ctx, x.ERISNar, c.opts.Local, c.opts.Has); err == nil {
				f.ERISNarHeld = held * int64(x.ERISNar.BlockSize())
			}
		}
	}
	return f
}

// treeHeld counts the blocks of the tree rc held locally; it fails when
// the tree's index is not all local.
func (c *Chooser) treeHeld(ctx context.Context, rc eris.ReadCapability) (erisfs.Holding, error) {
	if ok, err := c.opts.Has(ctx, rc.Root()); err != nil || !ok {
		return erisfs.Holding{}, eris.ErrNotFound
	}
	t, err := erisfs.Open(ctx, rc, c.opts.Local, erisfs.OpenOptions{Nodes: c.nodes})
	if err != nil {
		return erisfs.Holding{}, err
	}
	return t.Held(ctx, t.Root(), c.opts.Local, c.opts.Has)
}

// Write writes the nar of n to w from the first source, in the order of
// Choose, that works, and says which (see the package documentation for
// what happens on a failure; a w that is a Resetter lets a source that
// failed after writing into it give way to the next). On an error after Result.Sent > 0 bytes, w
// holds a nar cut short: the caller must abort whatever w feeds.
func (c *Chooser) Write(ctx context.Context, w io.Writer, n *narinfo.Narinfo, x Extra) (Result, error) {
	f := c.Facts(ctx, n, x)
	res := Result{Options: Choose(f, c.opts.Force)}
	cw := &countWriter{w: w}
	for _, o := range res.Options {
		before := c.remoteBytes()
		url, moved, err := c.try(ctx, cw, n, x, o)
		if o.Kind != Upstream {
			moved = c.remoteBytes() - before
		}
		res.Sent, res.Moved = cw.n, moved
		if err == nil {
			res.Kind, res.URL = o.Kind, url
			return res, nil
		}
		if ctx.Err() == nil {
			c.fail(n.StorePath, o.Kind)
		}
		a := Attempt{Option: o, URL: url, Err: err}
		if r, ok := w.(Resetter); ok && cw.n > 0 && ctx.Err() == nil && r.Reset() {
			cw.n = 0 // nothing went out: as if nothing had been written
		}
		if cw.n > 0 || ctx.Err() != nil {
			res.Kind, res.URL = o.Kind, url
			return res, fmt.Errorf("nar of %s from %s: %w", n.StorePath, a, err)
		}
		c.log.Warn("nar source failed before the first byte", "path", n.StorePath, "source", o.Kind, "url", url, "err", err)
		res.Attempts = append(res.Attempts, a)
	}
	return res, &NoSourceError{StorePath: n.StorePath, Attempts: res.Attempts}
}

func (c *Chooser) remoteBytes() int64 {
	if c.opts.RemoteBytes == nil {
		return 0
	}
	return c.opts.RemoteBytes()
}

// try writes the nar from one source.
func (c *Chooser) try(ctx context.Context, w io.Writer, n *narinfo.Narinfo, x Extra, o Option) (url string, moved int64, err error) {
	switch o.Kind {
	case Tree:
		rc, err := n.Capability()
		if err != nil {
			return "", 0, err
		}
		t, err := erisfs.Open(ctx, rc, c.opts.Blocks, erisfs.OpenOptions{Nodes: c.nodes})
		if err != nil {
			return "", 0, err
		}
		return "", 0, erisnar.WriteChecked(ctx, w, t, n, c.opts.Nar)
	case ERISNar:
		r, err := eris.NewReaderOptions(ctx, x.ERISNar, c.opts.Blocks, eris.ReaderOptions{Nodes: c.nodes})
		if err != nil {
			return "", 0, err
		}
		size, err := r.SizeContext(ctx)
		if err != nil {
			return "", 0, err
		}
		ar := newAheadReader(ctx, r, size)
		defer ar.Close()
		return "", 0, decompressChecked(ctx, w, ar, x.ERISNarCompression, n)
	case Upstream:
		l := n.Locations[o.Location]
		body, err := c.open(ctx, l.URL)
		if err != nil {
			return l.URL, 0, err
		}
		defer body.Close()
		cr := &countReader{r: body}
		err = decompressChecked(ctx, w, cr, l.Compression, n)
		return l.URL, cr.n, err
	}
	return "", 0, fmt.Errorf("unknown nar source %q", o.Kind)
}

// open starts the download of an absolute http(s) or file URL.
func (c *Chooser) open(ctx context.Context, u string) (io.ReadCloser, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	if pu.Scheme == "file" {
		return os.Open(pu.Path)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: HTTP %d", pu.Redacted(), resp.StatusCode)
	}
	return resp.Body, nil
}

// narMagic is how every nar starts: the string "nix-archive-1" as the nar
// encoding writes it (spec §2.1).
var narMagic = []byte("\x0d\x00\x00\x00\x00\x00\x00\x00nix-archive-1")

// decompressChecked decompresses r (method; "" means none, or bzip2 —
// Nix's default for a narinfo without Compression — when r does not start
// like a nar) into w, checked against n.
func decompressChecked(ctx context.Context, w io.Writer, r io.Reader, method string, n *narinfo.Narinfo) error {
	if method == "" {
		br := bufio.NewReader(r)
		head, _ := br.Peek(len(narMagic))
		method = compress.None
		if !bytes.Equal(head, narMagic) {
			method = compress.Bzip2
		}
		r = br
	}
	dr, err := compress.NewReader(r, method)
	if err != nil {
		return err
	}
	defer dr.Close()
	chk := erisnar.NewChecked(w, n)
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, rerr := dr.Read(buf)
		if m > 0 {
			if _, err := chk.Write(buf[:m]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%s: %w", method, rerr)
		}
	}
	return chk.Finish()
}

// recentFailures returns the sources that failed for path within
// FailureMemory.
func (c *Chooser) recentFailures(path string) map[Kind]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[Kind]bool{}
	for k, at := range c.failed[path] {
		if time.Since(at) < c.opts.FailureMemory {
			out[k] = true
		}
	}
	return out
}

// fail remembers that kind failed for path.
func (c *Chooser) fail(path string, kind Kind) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.failed) > 4096 { // forget what is old
		for p, m := range c.failed {
			for k, at := range m {
				if time.Since(at) >= c.opts.FailureMemory {
					delete(m, k)
				}
			}
			if len(m) == 0 {
				delete(c.failed, p)
			}
		}
	}
	if c.failed[path] == nil {
		c.failed[path] = map[Kind]time.Time{}
	}
	c.failed[path][kind] = time.Now()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
