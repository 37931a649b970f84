package fetcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"erismount/eris"
)

// ServerOptions configure a Server. The zero value serves blocks read-only.
type ServerOptions struct {
	// AllowPut lets clients store blocks with PUT or POST. Every uploaded
	// body is checked (size 1024 or 32768, Blake2b-256 equal to the
	// reference in the query) before it reaches the store.
	AllowPut bool
	// Logger receives request errors and listener events; nil discards.
	Logger *slog.Logger
	// StoreTimeout bounds one store call (default 10s).
	StoreTimeout time.Duration
	// Workers bounds the requests handled at once per CoAP listener
	// (default 64); further datagrams wait in the socket buffer.
	Workers int
	// IdleTimeout drops the state kept for a silent CoAP-over-UDP client
	// (default 60s).
	IdleTimeout time.Duration
	// CacheBlocks is how many 32 KiB blocks each CoAP listener keeps while
	// it sends them in 1 KiB parts (default 256, 8 MiB), so that a
	// block-wise transfer reads the store once.
	CacheBlocks int
	// TrustUDPSources answers CoAP-over-UDP requests in full from any
	// source address. By default an address must first show that it
	// receives our datagrams (RFC 9175 Echo, see echo.go): until then a
	// request gets a 4.01 with an Echo option at most three times its size,
	// so a forged source address cannot turn the server into a reflector.
	// Only for networks where source addresses cannot be forged.
	TrustUDPSources bool
	// Discoverable makes CoAP-over-UDP listeners on a wildcard address
	// (0.0.0.0, [::]) join the All CoAP Nodes groups (224.0.1.187,
	// ff02::fd) and answer discovery, GET /.well-known/core?rt=eris.blocks
	// (see Discover). Every CoAP listener answers /.well-known/core sent
	// to it directly.
	Discoverable bool
	// MaxUploadRate caps the block bytes sent, in bytes a second, over
	// every listener and transport (0: no cap). A request waits for its
	// turn; past StoreTimeout it gets 5.03 / 503.
	MaxUploadRate int64
	// Node is the node id this server advertises in its discovery answer
	// (the attribute node="…" of its link), so that the nodes of a swarm
	// agree on which of them owns a block (see Relay). Zero: none.
	Node NodeID
}

func (o *ServerOptions) fill() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StoreTimeout <= 0 {
		o.StoreTimeout = 10 * time.Second
	}
	if o.Workers <= 0 {
		o.Workers = 64
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = time.Minute
	}
	if o.CacheBlocks <= 0 {
		o.CacheBlocks = 256
	}
}

// Server serves blocks from a store over CoAP (UDP, TCP, Unix socket) and
// HTTP. Each Listen starts one listener; Close stops them all.
type Server struct {
	store eris.BlockStore
	opts  ServerOptions
	log   *slog.Logger
	stats serverCounters
	// upload caps the block bytes sent (nil: no cap). Every transport
	// calls upload.wait(ctx, n) before sending n block bytes.
	upload *uploadLimiter

	mu     sync.Mutex
	closed bool
	// listeners maps each running listener to the function that stops
	// watching its context.
	listeners map[listener]func() bool
}

// listener is one running endpoint. stop closes it and waits for every
// goroutine it started; concurrent and repeated calls all wait for the
// end (see stopOnce).
type listener interface {
	stop()
}

// stopOnce runs a stop function once; every caller of do waits for it.
type stopOnce struct {
	once sync.Once
	done chan struct{}
}

func (o *stopOnce) do(f func()) {
	o.once.Do(func() {
		o.done = make(chan struct{})
		defer close(o.done)
		f()
	})
	<-o.done
}

// NewServer returns a server over store. It listens nowhere until Listen.
func NewServer(store eris.BlockStore, opts ServerOptions) *Server {
	opts.fill()
	return &Server{store: store, opts: opts, log: opts.Logger, upload: newUploadLimiter(opts.MaxUploadRate), listeners: make(map[listener]func() bool)}
}

// NewReadOnlyServer returns a server that answers block requests from g
// and refuses uploads (4.05 / 405), whatever opts.AllowPut says: a node
// serving what it holds. Every request is a g.GetBlock, so g decides what
// a miss does: give it a getter of local tiers only (a *cache.SQLite, or a
// cache.Tiered without a Remote) to serve what is held, and a getter that
// fetches from peers only to relay on purpose.
func NewReadOnlyServer(g eris.BlockGetter, opts ServerOptions) *Server {
	opts.AllowPut = false
	return NewServer(readOnly{g}, opts)
}

// readOnly is a store that cannot be written.
type readOnly struct{ eris.BlockGetter }

func (readOnly) PutBlock(context.Context, eris.Ref, []byte) error {
	return errReadOnly
}

var errReadOnly = errors.New("fetcher: read-only store")

// Listen starts serving on rawURL and returns the URL it really listens on
// (with the port chosen when the URL asks for port 0):
//
//	coap://127.0.0.1:5683[/store-path]   CoAP over UDP, block-wise for 32 KiB
//	coap+tcp://127.0.0.1:5683[/store]    CoAP over TCP (RFC 8323)
//	coap+unix:///run/erismount.sock      RFC 8323 framing on a Unix socket
//	http://127.0.0.1:8080[/prefix]       GET/PUT <prefix>/uri-res/N2R?urn:blake2b:<REF>
//
// CoAP stores default to the path /.well-known/eris and serve the resource
// <store>/blocks?<REF>. The listener stops when ctx is cancelled or the
// server is closed.
func (s *Server) Listen(ctx context.Context, rawURL string) (string, error) {
	ep, err := parseEndpoint(rawURL)
	if err != nil {
		return "", err
	}
	if ep.scheme == "https" {
		return "", fmt.Errorf("%w %q: the server does not serve https; put a TLS proxy in front", ErrBadURL, rawURL)
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return "", ErrClosed
	}
	var (
		l    listener
		addr string
	)
	switch ep.transport {
	case transportUDP:
		l, addr, err = s.listenUDP(ep)
	case transportTCP, transportUnix:
		l, addr, err = s.listenStream(ep)
	default:
		l, addr, err = s.listenHTTP(ep)
	}
	if err != nil {
		return "", fmt.Errorf("fetcher: listen on %s: %w", rawURL, err)
	}
	ep.addr = addr
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.stop()
		return "", ErrClosed
	}
	s.listeners[l] = context.AfterFunc(ctx, func() { s.remove(l) })
	s.mu.Unlock()
	s.log.Info("serving blocks", "url", ep.String(), "put", s.opts.AllowPut)
	return ep.String(), nil
}

// remove stops a listener whose context ended and forgets it. It stays in
// the map while it stops, so that a concurrent Close waits for it too.
func (s *Server) remove(l listener) {
	l.stop()
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
}

// Close stops every listener and waits for their goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	ls := make(map[listener]func() bool, len(s.listeners))
	for l, unwatch := range s.listeners {
		ls[l] = unwatch
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for l, unwatch := range ls {
		unwatch()
		wg.Go(l.stop)
	}
	wg.Wait()
	s.mu.Lock()
	for l := range ls {
		delete(s.listeners, l)
	}
	s.mu.Unlock()
	return nil
}

// storeCtx bounds one store call.
func (s *Server) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.StoreTimeout)
}

// ServerStats are a server's counters since it started, over all its
// listeners, for metrics. They count store calls, so a 32 KiB block sent
// over UDP in 32 parts counts once.
type ServerStats struct {
	Gets     uint64 // block requests that reached the store
	Blocks   uint64 // of which found and sent
	Bytes    uint64 // their bytes
	NotFound uint64 // of which the store lacked the block
	Puts     uint64 // uploads (PUT or POST) that reached the checks
	Stored   uint64 // of which stored
	Rejected uint64 // of which refused: wrong size, or the body does not hash to the reference
	Errors   uint64 // store failures and timeouts, gets and puts
	// EchoChallenges counts the 4.01 answers with an Echo option sent to
	// unverified UDP source addresses; EchoDropped the requests from such
	// addresses too small to answer within three times their size.
	EchoChallenges uint64
	EchoDropped    uint64
	// Discoveries counts the multicast discovery requests answered.
	Discoveries uint64
	// Sent counts the block bytes sent, each part of a block-wise
	// transfer and every repeated request included (a block sent in parts
	// from the listener's block cache reads the store once: see Bytes).
	Sent uint64
}

type serverCounters struct {
	gets, blocks, bytes, notFound  atomic.Uint64
	puts, stored, rejected, errors atomic.Uint64
	echoChallenges, echoDropped    atomic.Uint64
	discoveries, sent              atomic.Uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	return ServerStats{Gets: c.gets.Load(), Blocks: c.blocks.Load(), Bytes: c.bytes.Load(), NotFound: c.notFound.Load(),
		Puts: c.puts.Load(), Stored: c.stored.Load(), Rejected: c.rejected.Load(), Errors: c.errors.Load(),
		EchoChallenges: c.echoChallenges.Load(), EchoDropped: c.echoDropped.Load(), Discoveries: c.discoveries.Load(), Sent: c.sent.Load()}
}
