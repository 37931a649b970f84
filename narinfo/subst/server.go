package subst

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"erismount/eris"
	"erismount/narinfo"
	"erismount/narinfo/erisnar"
	"erismount/narinfo/narsource"
	"erismount/narinfo/source"
)

var (
	// ErrRejected is matched by errors about an upstream narinfo the
	// server will not serve: malformed, signature not trusted, another
	// store directory, another store path, no source for its nar.
	ErrRejected = errors.New("upstream narinfo rejected")
	// ErrNoTrust means Options.Trust accepts nothing.
	ErrNoTrust = errors.New("subst: no trusted upstream keys (set Trust.ACL, Trust.NixKeys or Trust.Any)")
)

// Trust says which upstream narinfos a server made by New serves: those
// with a valid Guix signature by a key of ACL, or a valid Nix Sig by one of
// NixKeys — or, with Any, all of them (the Source is trusted as it is).
type Trust = source.Trust

// Options configure a Server. StoreDir and Trust matter; the other zero
// values are useful.
type Options struct {
	// StoreDir is the store the server serves: "/gnu/store" (the default)
	// or "/nix/store". Narinfos of other stores are not served.
	StoreDir string
	// Key, if set, signs served narinfos the Guix way (Signature: 1;Host;…).
	Key *narinfo.PrivateKey
	// Host is the host part of the Signature field; "" means "erismount".
	Host string
	// NixKey, if set, adds a Nix Sig to served narinfos.
	NixKey *narinfo.NixPrivateKey
	// Trust selects the upstream narinfos served by New (NewServer's
	// Lookup checks signatures itself).
	Trust Trust
	// TTL, if set, is sent as Cache-Control: max-age on narinfos;
	// NegativeTTL on 404 answers to narinfo requests (spec §5).
	TTL, NegativeTTL time.Duration
	// WantMassQuery and Priority go into /nix-cache-info (defaults: false
	// and 100, as guix publish).
	WantMassQuery bool
	Priority      int
	// Nar configures the nar streams of New (read-ahead).
	Nar erisnar.Options
	// Nodes caches the decrypted internal nodes of every tree New serves;
	// nil gives the server 32 MiB of its own.
	Nodes *eris.NodeCache
	// Logger receives one line per served or failed nar and per rejected
	// narinfo; nil discards.
	Logger *slog.Logger
}

// Stats count what a Server did since it started.
type Stats struct {
	Narinfos      int64 // narinfos served
	NarinfoMisses int64 // narinfo requests answered 404
	Rejected      int64 // upstream narinfos refused (see ErrRejected)
	Nars          int64 // nars served whole, verified
	NarsAborted   int64 // nar responses aborted (missing or corrupt block, mismatch, client gone)
	NarsFailed    int64 // nar requests answered 502 or 504: no source could start
	NarBytes      int64 // nar bytes sent, aborted responses included
	// Sources count, per nar source (narsource.Kind), what it did.
	Sources map[narsource.Kind]SourceStats
}

// SourceStats count what one nar source did.
type SourceStats struct {
	Nars    int64 // nars it served whole
	Aborted int64 // nars it began and cut short
	Failed  int64 // times it failed before the first byte (the next source, if any, was tried)
	Moved   int64 // bytes it brought over the network (compressed download, blocks from peers)
	Sent    int64 // nar bytes it produced
}

// Server is a substitute server (see the package documentation). It is an
// http.Handler; Serve runs it on a listener.
type Server struct {
	look source.Lookup
	src  *narsource.Chooser
	opts Options
	log  *slog.Logger
	// served maps the SHA-256 of a hash part and its upstream narinfo's
	// bytes to what is served for it: verifying and signing cost
	// milliseconds, and Guix asks for a thousand narinfos at once.
	served *lru.Cache[[sha256.Size]byte, *item]

	narinfos, misses, rejected, nars, aborted, failed, narBytes atomic.Int64

	srcMu   sync.Mutex
	sources map[narsource.Kind]*SourceStats
}

// item is an accepted upstream narinfo and the narinfo served for it.
type item struct {
	up     *narinfo.Narinfo
	served []byte
}

// New returns a server of the narinfos of src, checked against
// opts.Trust, whose nars are made from their ERIS-FS trees, the blocks from
// g (the substitute server of ERIS-only narinfo directories).
func New(src Source, g eris.BlockGetter, opts Options) (*Server, error) {
	if opts.Trust.IsZero() {
		return nil, ErrNoTrust
	}
	look := &rawLookup{src: src, trust: opts.Trust, storeDir: opts.StoreDir}
	if look.storeDir == "" {
		look.storeDir = "/gnu/store"
	}
	nodes := opts.Nodes
	if nodes == nil {
		nodes = eris.NewNodeCache(32 << 20)
	}
	nars := narsource.New(narsource.Options{Blocks: g, Nodes: nodes, Nar: opts.Nar, Force: narsource.Tree, Logger: opts.Logger})
	return NewServer(look, nars, opts)
}

// rawLookup checks the narinfos of a Source.
type rawLookup struct {
	src      Source
	trust    Trust
	storeDir string
}

func (l *rawLookup) Narinfo(ctx context.Context, hashPart string) (*narinfo.Narinfo, error) {
	raw, err := l.src.Narinfo(ctx, hashPart)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", source.ErrUnknown, err)
	}
	if err != nil {
		return nil, err
	}
	return source.Accept(raw, hashPart, l.storeDir, "the narinfo source", l.trust)
}

// NewServer returns a server of the narinfos look finds (verified there),
// whose nars come from nars: from the ERIS-FS tree, the compressed nar as
// ERIS content or the upstream's URL, whichever is cheapest and works.
func NewServer(look source.Lookup, nars *narsource.Chooser, opts Options) (*Server, error) {
	if opts.StoreDir == "" {
		opts.StoreDir = "/gnu/store"
	}
	if _, _, err := narinfo.SplitStorePath(opts.StoreDir + "/00000000000000000000000000000000-x"); err != nil {
		return nil, fmt.Errorf("subst: store directory %q: %w", opts.StoreDir, err)
	}
	if opts.Host == "" {
		opts.Host = "erismount"
	}
	if opts.Priority == 0 {
		opts.Priority = 100
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	served, err := lru.New[[sha256.Size]byte, *item](4096)
	if err != nil {
		return nil, err
	}
	return &Server{look: look, src: nars, opts: opts, log: log, served: served, sources: map[narsource.Kind]*SourceStats{}}, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Narinfos: s.narinfos.Load(), NarinfoMisses: s.misses.Load(), Rejected: s.rejected.Load(),
		Nars: s.nars.Load(), NarsAborted: s.aborted.Load(), NarsFailed: s.failed.Load(), NarBytes: s.narBytes.Load(),
		Sources: map[narsource.Kind]SourceStats{},
	}
	s.srcMu.Lock()
	defer s.srcMu.Unlock()
	for k, v := range s.sources {
		st.Sources[k] = *v
	}
	return st
}

// count adds what a nar's sources did to the per-source counters.
func (s *Server) count(res narsource.Result, ok bool) {
	s.srcMu.Lock()
	defer s.srcMu.Unlock()
	get := func(k narsource.Kind) *SourceStats {
		if s.sources[k] == nil {
			s.sources[k] = &SourceStats{}
		}
		return s.sources[k]
	}
	for _, a := range res.Attempts {
		get(a.Option.Kind).Failed++
	}
	if res.Kind == "" {
		return
	}
	st := get(res.Kind)
	st.Moved += res.Moved
	st.Sent += res.Sent
	if ok {
		st.Nars++
	} else {
		st.Aborted++
	}
}

// Serve answers HTTP requests on ln until ctx ends, then closes the
// listener; nar streams still running are aborted. It returns nil after a
// shutdown by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if hs.Shutdown(sctx) != nil {
			hs.Close()
		}
	}()
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped
		return nil
	}
	return err
}

// ServeHTTP routes as guix publish does (spec §5): GET only (and HEAD,
// which Nix uses), everything else 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.notFound(w, r, 0)
		return
	}
	p := r.URL.Path
	switch {
	case p == "/" || p == "/index.html":
		s.home(w)
	case p == "/nix-cache-info":
		s.cacheInfo(w)
	case p == "/signing-key.pub":
		s.signingKey(w, r)
	case strings.HasPrefix(p, "/nar/"):
		s.nar(w, r, strings.TrimPrefix(p, "/nar/"))
	case strings.HasSuffix(p, ".narinfo") && strings.LastIndexByte(p, '/') == 0:
		s.narinfo(w, r, strings.TrimSuffix(p[1:], ".narinfo"))
	default:
		s.notFound(w, r, 0)
	}
}

// notFound answers 404 as guix publish does, with Cache-Control when ttl
// is set.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request, ttl time.Duration) {
	if ttl > 0 {
		w.Header().Set("Cache-Control", maxAge(ttl))
	}
	text(w, http.StatusNotFound, "Resource not found: "+r.URL.Path+"\n")
}

func maxAge(d time.Duration) string {
	return "max-age=" + strconv.FormatInt(int64(d/time.Second), 10)
}

// text answers with a plain-text body.
func text(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain;charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func (s *Server) home(w http.ResponseWriter) {
	key := ""
	if s.opts.Key != nil || s.opts.NixKey != nil {
		key = `<p>This server's signing key: <a href="/signing-key.pub">signing-key.pub</a>.</p>`
	}
	body := fmt.Sprintf(`<!DOCTYPE html>
<html><head><title>erismount substitute server</title></head>
<body><h1>erismount substitute server</h1>
<p>Substitutes for %s, nars made from ERIS-FS trees as they are read.</p>
%s</body></html>
`, html.EscapeString(s.opts.StoreDir), key)
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	io.WriteString(w, body)
}

// cacheInfo is /nix-cache-info: Guix clients ignore it, Nix clients check
// StoreDir against their own (spec §5).
func (s *Server) cacheInfo(w http.ResponseWriter) {
	mass := 0
	if s.opts.WantMassQuery {
		mass = 1
	}
	w.Header().Set("Content-Type", "text/plain")
	body := fmt.Sprintf("StoreDir: %s\nWantMassQuery: %d\nPriority: %d\n", s.opts.StoreDir, mass, s.opts.Priority)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	io.WriteString(w, body)
}

// signingKey is /signing-key.pub: the Guix public key file, or else the Nix
// public key as trusted-public-keys lists it.
func (s *Server) signingKey(w http.ResponseWriter, r *http.Request) {
	var body string
	switch {
	case s.opts.Key != nil:
		b, err := s.opts.Key.Public().MarshalText()
		if err != nil {
			text(w, http.StatusInternalServerError, err.Error()+"\n")
			return
		}
		body = string(b)
	case s.opts.NixKey != nil:
		body = s.opts.NixKey.Public().String() + "\n"
	default:
		s.notFound(w, r, 0)
		return
	}
	text(w, http.StatusOK, body)
}

func (s *Server) narinfo(w http.ResponseWriter, r *http.Request, hashPart string) {
	it, err := s.lookup(r.Context(), hashPart)
	if err != nil {
		s.misses.Add(1)
		s.notFound(w, r, s.opts.NegativeTTL)
		return
	}
	s.narinfos.Add(1)
	h := w.Header()
	h.Set("Content-Type", "application/x-nix-narinfo; charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(it.served)))
	if s.opts.TTL > 0 {
		h.Set("Cache-Control", maxAge(s.opts.TTL))
	}
	w.Write(it.served)
}

// lookup returns the item of hashPart: its upstream narinfo, checked, and
// the narinfo served for it.
func (s *Server) lookup(ctx context.Context, hashPart string) (*item, error) {
	if !source.ValidHashPart(hashPart) {
		return nil, ErrNotFound
	}
	up, err := s.look.Narinfo(ctx, hashPart)
	switch {
	case errors.Is(err, source.ErrUnknown):
		return nil, err
	case errors.Is(err, source.ErrUntrusted):
		s.rejected.Add(1)
		s.log.Warn("narinfo not served", "hash", hashPart, "err", err)
		return nil, fmt.Errorf("%w: %w", ErrRejected, err)
	case err != nil:
		s.log.Warn("read narinfo", "hash", hashPart, "err", err)
		return nil, err
	}
	var key [sha256.Size]byte
	sum := sha256.New()
	sum.Write([]byte(hashPart))
	sum.Write(up.Raw())
	for _, l := range up.Locations {
		sum.Write([]byte{0})
		sum.Write([]byte(l.URL))
	}
	sum.Sum(key[:0])
	if it, ok := s.served.Get(key); ok {
		return it, nil
	}
	it, err := s.accept(up)
	if err != nil {
		s.rejected.Add(1)
		s.log.Warn("narinfo not served", "hash", hashPart, "err", err)
		return nil, err
	}
	s.served.Add(key, it)
	return it, nil
}

// accept makes the narinfo served for a verified upstream narinfo, if a
// source could produce its nar.
func (s *Server) accept(up *narinfo.Narinfo) (*item, error) {
	if dir := up.StoreDir(); dir != s.opts.StoreDir {
		return nil, fmt.Errorf("%w: %s is in %s, this server serves %s", ErrRejected, up.StorePath, dir, s.opts.StoreDir)
	}
	if len(s.src.Possible(up)) == 0 {
		_, err := up.Capability()
		return nil, fmt.Errorf("%w: %s: no source for its nar (%v, and no URL of a known compression)", ErrRejected, up.StorePath, err)
	}
	rc, _ := up.Capability()
	out := &narinfo.Narinfo{
		StorePath:  up.StorePath,
		NarHash:    up.NarHash,
		NarSize:    up.NarSize,
		References: up.References,
		Deriver:    up.Deriver,
		System:     up.System,
		ERIS:       rc,
		ERISNar:    up.ERISNar,
		Locations:  []narinfo.Location{{URL: narURL(up.BaseName()), Compression: "none", FileSize: up.NarSize}},
	}
	if s.opts.NixKey != nil {
		if err := out.SignNix(*s.opts.NixKey); err != nil {
			return nil, err
		}
	}
	var (
		served []byte
		err    error
	)
	if s.opts.Key != nil {
		served, err = out.Sign(narinfo.Classic, s.opts.Key, s.opts.Host)
	} else {
		served, err = out.Marshal(narinfo.Classic)
	}
	if err != nil {
		return nil, err
	}
	return &item{up: up, served: served}, nil
}

// narURL is where a nar is served, relative to the server, as guix publish
// writes it: the base name URI-encoded, `+` as %2B (spec §1.3).
func narURL(base string) string {
	return "nar/" + strings.ReplaceAll(url.PathEscape(base), "+", "%2B")
}

// nar streams /nar/<basename> from the cheapest source that works.
func (s *Server) nar(w http.ResponseWriter, r *http.Request, base string) {
	if narinfo.CheckBaseName(base) != nil {
		s.notFound(w, r, 0) // nar/<compression>/… included: only uncompressed nars here
		return
	}
	it, err := s.lookup(r.Context(), base[:32])
	if err != nil || it.up.BaseName() != base {
		s.notFound(w, r, 0)
		return
	}
	h := w.Header()
	if r.Method == http.MethodHead {
		h.Set("Content-Type", "application/x-nix-archive; charset=ISO-8859-1")
		h.Set("Content-Length", strconv.FormatInt(it.up.NarSize, 10))
		return
	}
	ctx := r.Context()
	start := time.Now()
	// The status goes out with the first nar byte: until then a failing
	// source can give way to the next, or the request to an error status.
	// Live `guix publish` sends this type; the length is the signed NarSize,
	// so that a client sees any aborted response as incomplete.
	cw := &countingWriter{w: w, n: &s.narBytes, start: func() {
		h.Set("Content-Type", "application/x-nix-archive; charset=ISO-8859-1")
		h.Set("Content-Length", strconv.FormatInt(it.up.NarSize, 10))
		w.WriteHeader(http.StatusOK)
	}}
	res, err := s.src.Write(ctx, cw, it.up)
	if err == nil {
		err = cw.commit()
	}
	s.count(res, err == nil)
	if err == nil {
		s.nars.Add(1)
		s.log.Info("nar served", "path", it.up.StorePath, "source", res.Kind, "url", res.URL, "bytes", res.Sent,
			"moved", res.Moved, "fallbacks", len(res.Attempts), "duration", time.Since(start))
		return
	}
	if cw.sent > 0 || ctx.Err() != nil {
		s.aborted.Add(1)
		s.log.Warn("nar aborted", "path", it.up.StorePath, "source", res.Kind, "sent", cw.sent, "nar_size", it.up.NarSize,
			"moved", res.Moved, "err", err)
		// Close the connection without finishing the response: the client
		// gets fewer bytes than Content-Length, never a whole wrong nar.
		panic(http.ErrAbortHandler)
	}
	s.failed.Add(1)
	s.log.Warn("nar not served", "path", it.up.StorePath, "err", err)
	code := http.StatusBadGateway
	var nse *narsource.NoSourceError
	if errors.As(err, &nse) && nse.Timeout() {
		code = http.StatusGatewayTimeout
	}
	text(w, code, strings.ReplaceAll(err.Error(), "\n", " ")+"\n")
}

// holdFirst is how much of a nar the server keeps before it commits to a
// 200 response: a nar smaller than this that fails (a tampered upstream
// nar, a missing block) is answered with an error status rather than a
// connection closed early, which Guix reports with a backtrace.
const holdFirst = 64 << 10

// countingWriter passes a nar on to w, counting the bytes: the first
// holdFirst bytes are kept until there are that many, or until commit;
// start is called before the first byte reaches w.
type countingWriter struct {
	w     io.Writer
	n     *atomic.Int64
	sent  int64 // bytes passed to w
	start func()
	held  []byte
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.start != nil {
		c.held = append(c.held, p...)
		if len(c.held) < holdFirst {
			return len(p), nil
		}
		if err := c.commit(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	n, err := c.w.Write(p)
	c.sent += int64(n)
	c.n.Add(int64(n))
	return n, err
}

// Reset discards what is held, if nothing was sent yet (narsource.Resetter).
func (c *countingWriter) Reset() bool {
	if c.start == nil {
		return false
	}
	c.held = c.held[:0]
	return true
}

// commit starts the response and writes what is held.
func (c *countingWriter) commit() error {
	if c.start == nil {
		return nil
	}
	c.start()
	c.start = nil
	held := c.held
	c.held = nil
	_, err := c.Write(held)
	return err
}
