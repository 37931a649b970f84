package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/options/config"
	"github.com/plgd-dev/go-coap/v3/tcp"
	tcpclient "github.com/plgd-dev/go-coap/v3/tcp/client"

	"erismount/eris"
)

// coapCodes maps results to CoAP response codes (RFC 7252 §5.9).
var coapCodes = map[result]codes.Code{
	resOK:               codes.Content,
	resCreated:          codes.Created,
	resBadRequest:       codes.BadRequest,
	resNotFound:         codes.NotFound,
	resMethodNotAllowed: codes.MethodNotAllowed,
	resTooLarge:         codes.RequestEntityTooLarge,
	resUnavailable:      codes.ServiceUnavailable,
	resInternal:         codes.InternalServerError,
}

// coapBlocks serves <store>/blocks?<REF> on one CoAP listener: GET returns
// the block (2.05, application/octet-stream) or 4.04; PUT and POST store a
// verified block (2.01) when allowed. Errors carry a diagnostic payload.
// Block-wise transfer is done here (see coap_blockwise.go).
type coapBlocks struct {
	s          *Server
	storePath  string
	blocksPath string
	heldPath   string // <store>/held/blocks: the same, never relayed
	udp        bool
	recent     *lru.Cache[eris.Ref, []byte] // 32 KiB blocks being sent in parts
	uploads    uploads
}

func (s *Server) newCoAPBlocks(ep endpoint) *coapBlocks {
	c := &coapBlocks{s: s, storePath: ep.path, blocksPath: ep.blocksPath(), heldPath: ep.path + HeldPath + "/blocks", udp: ep.transport == transportUDP}
	c.recent, _ = lru.New[eris.Ref, []byte](s.opts.CacheBlocks)
	return c
}

func (c *coapBlocks) ServeCOAP(w mux.ResponseWriter, r *mux.Message) {
	code := r.Code()
	if code < codes.GET || code > codes.IPATCH {
		return // not a request (empty, ping, response): nothing to answer
	}
	if p, err := r.Path(); err == nil && p == "/.well-known/core" && code == codes.GET {
		qs, _ := r.Queries()
		if links, ok := c.coreLinks(qs); ok {
			if err := w.SetResponse(codes.Content, message.AppLinkFormat, strings.NewReader(links)); err != nil {
				c.s.log.Warn("coap: cannot set response", "err", err)
			}
			return
		}
		c.respond(w, reply{res: resNotFound, diag: "no resource matches"})
		return
	}
	// The held resource is the same blocks, never relayed (see Relay).
	p, err := r.Path()
	held := err == nil && p == c.heldPath
	if err != nil || (p != c.blocksPath && !held) {
		c.respond(w, reply{res: resNotFound, diag: "no such resource, blocks are at " + c.blocksPath + "?<REF>"})
		return
	}
	if code != codes.GET && code != codes.PUT && code != codes.POST {
		c.respond(w, reply{res: resMethodNotAllowed, diag: "GET, PUT or POST"})
		return
	}
	qs, err := r.Queries()
	if err != nil || len(qs) != 1 {
		c.respond(w, reply{res: resBadRequest, diag: "want one URI-Query: the block reference (52 base32 characters or 32 octets)"})
		return
	}
	ref, err := parseRefQuery(qs[0], true)
	if err != nil {
		c.respond(w, reply{res: resBadRequest, diag: err.Error()})
		return
	}
	ctx, cancel := c.s.storeCtx(r.Context())
	defer cancel()
	if held {
		ctx = NoRelay(ctx)
	}
	if code == codes.GET {
		c.get(ctx, w, r, ref)
		return
	}
	if !c.s.opts.AllowPut {
		c.respond(w, reply{res: resMethodNotAllowed, diag: "this store is read-only"})
		return
	}
	c.put(ctx, w, r, ref, qs[0])
}

func (c *coapBlocks) get(ctx context.Context, w mux.ResponseWriter, r *mux.Message, ref eris.Ref) {
	opt, err := r.GetOptionUint32(message.Block2)
	hasOpt := err == nil
	b, cached := c.recent.Get(ref)
	if !cached {
		rep := c.s.getBlock(ctx, ref)
		if rep.res != resOK {
			c.respond(w, rep)
			return
		}
		b = rep.block
	}
	sl, err := sliceBlock2(len(b), opt, hasOpt, c.udp)
	if err != nil {
		c.respondCode(w, codes.BadOption, err.Error())
		return
	}
	if sl.more && !cached && c.recent != nil {
		c.recent.Add(ref, b) // the next requests of this transfer want it
	}
	if err := c.s.upload.wait(ctx, sl.end-sl.off); err != nil {
		c.respond(w, reply{res: resUnavailable, diag: "over the upload rate limit: no turn in time"})
		return
	}
	if err := w.SetResponse(codes.Content, message.AppOctets, bytes.NewReader(b[sl.off:sl.end])); err != nil {
		c.s.log.Warn("coap: cannot set response", "err", err)
		return
	}
	c.s.stats.sent.Add(uint64(sl.end - sl.off))
	if sl.blockwise {
		v, err := blockwise.EncodeBlockOption(sl.szx, sl.num, sl.more)
		if err == nil {
			w.Message().SetOptionUint32(message.Block2, v)
			w.Message().SetOptionUint32(message.Size2, uint32(len(b)))
		}
	}
}

func (c *coapBlocks) put(ctx context.Context, w mux.ResponseWriter, r *mux.Message, ref eris.Ref, query string) {
	body, err := r.ReadBody()
	if err != nil {
		c.respond(w, reply{res: resBadRequest, diag: "cannot read body"})
		return
	}
	opt, err := r.GetOptionUint32(message.Block1)
	if err != nil { // the whole block in one message
		c.respond(w, c.s.putBlock(ctx, ref, body))
		return
	}
	if size1, err := r.GetOptionUint32(message.Size1); err == nil && size1 > eris.BlockSize32K {
		c.respond(w, reply{res: resTooLarge, diag: errUploadTooLarge.Error()})
		return
	}
	szx, num, more, err := blockwise.DecodeBlockOption(opt)
	if err != nil || (szx == blockwise.SZXBERT && c.udp) {
		c.respondCode(w, codes.BadOption, "bad Block1 option")
		return
	}
	unit := blockSize(szx)
	if more && (len(body) == 0 || int64(len(body))%unit != 0) {
		c.respond(w, reply{res: resBadRequest, diag: "a Block1 block before the last must be full"})
		return
	}
	key := fmt.Sprint(w.Conn().RemoteAddr(), "|", query)
	full, complete, again, err := c.uploads.add(key, int(num*unit), body, more, time.Now())
	switch {
	case errors.Is(err, errIncomplete):
		c.respondCode(w, codes.RequestEntityIncomplete, err.Error())
		return
	case errors.Is(err, errUploadTooLarge):
		c.respond(w, reply{res: resTooLarge, diag: err.Error()})
		return
	case err != nil:
		c.respond(w, reply{res: resUnavailable, diag: err.Error()})
		return
	}
	switch {
	case again != nil:
		c.respond(w, *again)
	case complete:
		rep := c.s.putBlock(ctx, ref, full)
		c.uploads.finish(key, rep)
		c.respond(w, rep)
	default:
		if err := w.SetResponse(codes.Continue, message.TextPlain, nil); err != nil {
			return
		}
	}
	// RFC 7959 §2.3: the response to each block echoes its Block1 option.
	if v, err := blockwise.EncodeBlockOption(szx, num, more); err == nil {
		w.Message().SetOptionUint32(message.Block1, v)
	}
}

func (c *coapBlocks) respondCode(w mux.ResponseWriter, code codes.Code, diag string) {
	if err := w.SetResponse(code, message.TextPlain, strings.NewReader(diag)); err != nil {
		c.s.log.Warn("coap: cannot set response", "err", err)
	}
	c.s.log.Debug("coap request refused", "code", coapCodeString(code), "from", w.Conn().RemoteAddr(), "why", diag)
}

func (c *coapBlocks) respond(w mux.ResponseWriter, rep reply) {
	if rep.res == resOK {
		if err := w.SetResponse(codes.Content, message.AppOctets, bytes.NewReader(rep.block)); err != nil {
			c.s.log.Warn("coap: cannot set response", "err", err)
		}
		return
	}
	code := coapCodes[rep.res]
	if rep.res == resCreated {
		if err := w.SetResponse(code, message.TextPlain, nil); err != nil {
			c.s.log.Warn("coap: cannot set response", "err", err)
		}
		return
	}
	c.respondCode(w, code, rep.diag)
	if rep.res == resTooLarge {
		// RFC 7959 §2.9.3: Size1 tells the client the largest body accepted.
		w.Message().SetOptionUint32(message.Size1, eris.BlockSize32K)
	}
	if rep.res == resInternal {
		c.s.log.Warn("coap: store error", "from", w.Conn().RemoteAddr(), "why", rep.diag)
	}
}

// coapErrors logs go-coap's internal errors at debug level: they are
// about one client (malformed datagrams, vanished peers), not the server.
func (s *Server) coapErrors(err error) {
	s.log.Debug("coap", "err", err)
}

// streamListener is CoAP over TCP or a Unix socket (RFC 8323 framing),
// on go-coap's TCP server.
type streamListener struct {
	srv    interface{ Stop() }
	nl     *acceptListener
	tick   *periodic
	work   *workers
	cancel context.CancelFunc
	served chan struct{}
	once   stopOnce
}

func (s *Server) listenStream(ep endpoint) (listener, string, error) {
	network := "tcp"
	if ep.transport == transportUnix {
		network = "unix"
		if err := removeStaleSocket(ep.addr); err != nil {
			return nil, "", err
		}
	}
	nl, err := net.Listen(network, ep.addr)
	if err != nil {
		return nil, "", err
	}
	addr := ep.addr
	if network == "tcp" {
		addr = nl.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &streamListener{
		nl:     &acceptListener{l: nl},
		tick:   newPeriodic(time.Second),
		work:   newWorkers(ctx, s.opts.Workers),
		cancel: cancel,
		served: make(chan struct{}),
	}
	process := func(req *pool.Message, cc *tcpclient.Conn, h config.HandlerFunc[*tcpclient.Conn]) {
		l.work.run(func() { cc.ProcessReceivedMessageWithHandler(req, h) }, func() { cc.ReleaseMessage(req) })
	}
	srv := tcp.NewServer(
		options.WithMux(s.newCoAPBlocks(ep)),
		options.WithErrors(s.coapErrors),
		options.WithPeriodicRunner(l.tick.add),
		options.WithProcessReceivedMessageFunc(config.ProcessReceivedMessageFunc[*tcpclient.Conn](process)),
		// Block-wise transfer is ours (coap_blockwise.go). A message
		// carries a whole 32 KiB block.
		options.WithBlockwise(false, blockwise.SZXBERT, 10*time.Second),
		options.WithMaxMessageSize(64<<10),
	)
	l.srv = srv
	go func() {
		defer close(l.served)
		if err := srv.Serve(l.nl); err != nil {
			s.log.Warn("coap stream listener ended", "addr", addr, "err", err)
		}
	}()
	return l, addr, nil
}

func (l *streamListener) stop() {
	l.once.do(func() {
		l.cancel()
		l.srv.Stop()
		<-l.served // Serve closes every connection and waits for them
		l.work.wait()
		l.tick.stop()
	})
}

// acceptListener adapts a net.Listener to go-coap's Listener: after Close,
// Accept reports coapnet.ErrListenerIsClosed, which is what makes the
// server's accept loop end.
//
// It also keeps the connections it accepted, and Close closes them:
// go-coap's server closes its connections by remote address, and every
// client of a Unix socket has the same (empty) one, so it would close only
// one of them and then wait for the others to end.
type acceptListener struct {
	l      net.Listener
	closed atomic.Bool
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
}

// trackedConn is an accepted connection that its listener can close.
type trackedConn struct {
	net.Conn
	a    *acceptListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.a.mu.Lock()
		delete(c.a.conns, c)
		c.a.mu.Unlock()
	})
	return c.Conn.Close()
}

func (a *acceptListener) AcceptWithContext(ctx context.Context) (net.Conn, error) {
	for {
		if a.closed.Load() || ctx.Err() != nil {
			return nil, coapnet.ErrListenerIsClosed
		}
		c, err := a.l.Accept()
		if err == nil {
			tc := &trackedConn{Conn: c, a: a}
			a.mu.Lock()
			if a.closed.Load() {
				a.mu.Unlock()
				c.Close()
				return nil, coapnet.ErrListenerIsClosed
			}
			if a.conns == nil {
				a.conns = make(map[*trackedConn]struct{})
			}
			a.conns[tc] = struct{}{}
			a.mu.Unlock()
			return tc, nil
		}
		if a.closed.Load() || errors.Is(err, net.ErrClosed) {
			return nil, coapnet.ErrListenerIsClosed
		}
		// Out of file descriptors or similar: wait instead of spinning.
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (a *acceptListener) Close() error {
	a.mu.Lock()
	if !a.closed.CompareAndSwap(false, true) {
		a.mu.Unlock()
		return nil
	}
	conns := a.conns
	a.conns = nil
	a.mu.Unlock()
	err := a.l.Close()
	for c := range conns {
		c.Conn.Close()
	}
	return err
}

// removeStaleSocket deletes a Unix socket file left by a process that is
// gone; a socket something still listens on is an error.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil // nothing there (or we cannot tell): let Listen decide
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another server is listening", path)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return os.Remove(path)
	}
	return nil
}
