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
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"erismount/eris"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/erisnar"
)

var (
	// ErrRejected is matched by errors about an upstream narinfo the
	// server will not serve: malformed, signature not trusted, another
	// store directory, another store path, no usable ERIS field.
	ErrRejected = errors.New("upstream narinfo rejected")
	// ErrNoTrust means Options.Trust accepts nothing.
	ErrNoTrust = errors.New("subst: no trusted upstream keys (set Trust.ACL, Trust.NixKeys or Trust.Any)")
)

// Trust says which upstream narinfos a server serves: those with a valid
// Guix signature by a key of ACL, or a valid Nix Sig by one of NixKeys —
// or, with Any, all of them (the Source is trusted as it is).
type Trust struct {
	ACL     *narinfo.ACL
	NixKeys []narinfo.NixPublicKey
	Any     bool
}

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
	// Trust selects the upstream narinfos served.
	Trust Trust
	// TTL, if set, is sent as Cache-Control: max-age on narinfos;
	// NegativeTTL on 404 answers to narinfo requests (spec §5).
	TTL, NegativeTTL time.Duration
	// WantMassQuery and Priority go into /nix-cache-info (defaults: false
	// and 100, as guix publish).
	WantMassQuery bool
	Priority      int
	// Nar configures the nar streams (read-ahead).
	Nar erisnar.Options
	// Nodes caches the decrypted internal nodes of every tree served; nil
	// gives the server 32 MiB of its own.
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
	NarBytes      int64 // nar bytes sent, aborted responses included
}

// Server is a substitute server (see the package documentation). It is an
// http.Handler; Serve runs it on a listener.
type Server struct {
	src   Source
	g     eris.BlockGetter
	opts  Options
	log   *slog.Logger
	nodes *eris.NodeCache
	// served maps the SHA-256 of a hash part and its upstream narinfo's
	// bytes to what is served for it: verifying and signing cost
	// milliseconds, and Guix asks for a thousand narinfos at once.
	served *lru.Cache[[sha256.Size]byte, *item]

	narinfos, misses, rejected, nars, aborted, narBytes atomic.Int64
}

// item is an accepted upstream narinfo and the narinfo served for it.
type item struct {
	up     *narinfo.Narinfo
	rc     eris.ReadCapability
	served []byte
}

// New returns a server of the narinfos of src whose trees' blocks come from
// g.
func New(src Source, g eris.BlockGetter, opts Options) (*Server, error) {
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
	if opts.Trust.ACL == nil && len(opts.Trust.NixKeys) == 0 && !opts.Trust.Any {
		return nil, ErrNoTrust
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nodes := opts.Nodes
	if nodes == nil {
		nodes = eris.NewNodeCache(32 << 20)
	}
	served, err := lru.New[[sha256.Size]byte, *item](4096)
	if err != nil {
		return nil, err
	}
	return &Server{src: src, g: g, opts: opts, log: log, nodes: nodes, served: served}, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Narinfos: s.narinfos.Load(), NarinfoMisses: s.misses.Load(), Rejected: s.rejected.Load(),
		Nars: s.nars.Load(), NarsAborted: s.aborted.Load(), NarBytes: s.narBytes.Load(),
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
	if !validHashPart(hashPart) {
		return nil, ErrNotFound
	}
	raw, err := s.src.Narinfo(ctx, hashPart)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			s.log.Warn("read narinfo", "hash", hashPart, "err", err)
		}
		return nil, err
	}
	var key [sha256.Size]byte
	sum := sha256.New()
	sum.Write([]byte(hashPart))
	sum.Write(raw)
	sum.Sum(key[:0])
	if it, ok := s.served.Get(key); ok {
		return it, nil
	}
	it, err := s.accept(hashPart, raw)
	if err != nil {
		s.rejected.Add(1)
		s.log.Warn("narinfo not served", "hash", hashPart, "err", err)
		return nil, err
	}
	s.served.Add(key, it)
	return it, nil
}

// accept checks an upstream narinfo and makes the narinfo served for it.
func (s *Server) accept(hashPart string, raw []byte) (*item, error) {
	up, err := narinfo.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if dir := up.StoreDir(); dir != s.opts.StoreDir {
		return nil, fmt.Errorf("%w: %s is in %s, this server serves %s", ErrRejected, up.StorePath, dir, s.opts.StoreDir)
	}
	if !strings.HasPrefix(up.BaseName(), hashPart+"-") {
		return nil, fmt.Errorf("%w: the narinfo of %s is for %s", ErrRejected, hashPart, up.StorePath)
	}
	if err := s.trusted(up); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrRejected, up.StorePath, err)
	}
	rc, err := up.Capability()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrRejected, up.StorePath, err)
	}
	out := &narinfo.Narinfo{
		StorePath:  up.StorePath,
		NarHash:    up.NarHash,
		NarSize:    up.NarSize,
		References: up.References,
		Deriver:    up.Deriver,
		System:     up.System,
		ERIS:       rc,
		Locations:  []narinfo.Location{{URL: narURL(up.BaseName()), Compression: "none", FileSize: up.NarSize}},
	}
	if s.opts.NixKey != nil {
		if err := out.SignNix(*s.opts.NixKey); err != nil {
			return nil, err
		}
	}
	var served []byte
	if s.opts.Key != nil {
		served, err = out.Sign(narinfo.Classic, s.opts.Key, s.opts.Host)
	} else {
		served, err = out.Marshal(narinfo.Classic)
	}
	if err != nil {
		return nil, err
	}
	return &item{up: up, rc: rc, served: served}, nil
}

// narURL is where a nar is served, relative to the server, as guix publish
// writes it: the base name URI-encoded, `+` as %2B (spec §1.3).
func narURL(base string) string {
	return "nar/" + strings.ReplaceAll(url.PathEscape(base), "+", "%2B")
}

// trusted checks up's signatures against Options.Trust.
func (s *Server) trusted(up *narinfo.Narinfo) error { return s.opts.Trust.Check(up) }

// Check returns nil if t trusts n: a valid Guix signature by a key of the
// ACL, or a valid Nix Sig by one of the Nix keys (or Any); else why not.
func (t Trust) Check(up *narinfo.Narinfo) error {
	if t.Any {
		return nil
	}
	var errs []error
	if t.ACL != nil {
		_, err := up.Verify(t.ACL)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(t.NixKeys) > 0 {
		_, err := up.VerifyNix(t.NixKeys)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// nar streams /nar/<basename> from the item's ERIS-FS tree.
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
	tree, err := erisfs.Open(ctx, it.rc, s.g, erisfs.OpenOptions{Nodes: s.nodes})
	if err != nil {
		s.aborted.Add(1)
		s.log.Warn("nar not served", "path", it.up.StorePath, "err", err)
		if ctx.Err() != nil {
			panic(http.ErrAbortHandler) // the client is gone, or the server stopping
		}
		code := http.StatusServiceUnavailable // blocks unavailable: try later, or another server
		if errors.Is(err, eris.ErrCorrupt) || errors.Is(err, erisfs.ErrInvalidIndex) || errors.Is(err, erisfs.ErrLimit) {
			code = http.StatusBadGateway
		}
		text(w, code, fmt.Sprintf("cannot read the ERIS-FS tree of %s: %v\n", it.up.StorePath, err))
		return
	}
	// Live `guix publish` sends this type; the length is the signed NarSize,
	// so that a client sees any aborted response as incomplete.
	h.Set("Content-Type", "application/x-nix-archive; charset=ISO-8859-1")
	h.Set("Content-Length", strconv.FormatInt(it.up.NarSize, 10))
	w.WriteHeader(http.StatusOK)
	cw := &countingWriter{w: w, n: &s.narBytes}
	if err := erisnar.WriteChecked(ctx, cw, tree, it.up, s.opts.Nar); err != nil {
		s.aborted.Add(1)
		s.log.Warn("nar aborted", "path", it.up.StorePath, "sent", cw.sent, "nar_size", it.up.NarSize, "err", err)
		// Close the connection without finishing the response: the client
		// gets fewer bytes than Content-Length, never a whole wrong nar.
		panic(http.ErrAbortHandler)
	}
	s.nars.Add(1)
	s.log.Info("nar served", "path", it.up.StorePath, "bytes", cw.sent, "duration", time.Since(start))
}

// countingWriter counts the bytes passed to w.
type countingWriter struct {
	w    io.Writer
	n    *atomic.Int64
	sent int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.sent += int64(n)
	c.n.Add(int64(n))
	return n, err
}
