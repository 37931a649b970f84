package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

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

// coapHandler serves <store>/blocks?<REF>: GET returns the block (2.05,
// application/octet-stream) or 4.04; PUT and POST store a verified block
// (2.01) when allowed. Errors carry a diagnostic payload.
func (s *Server) coapHandler(blocksPath string) mux.Handler {
	return mux.HandlerFunc(func(w mux.ResponseWriter, r *mux.Message) {
		code := r.Code()
		if code < codes.GET || code > codes.IPATCH {
			return // not a request (empty, ping, response): nothing to answer
		}
		rep := s.serveCoAP(r, code, blocksPath)
		s.respondCoAP(w, r, rep)
	})
}

func (s *Server) serveCoAP(r *mux.Message, code codes.Code, blocksPath string) reply {
	if p, err := r.Path(); err != nil || p != blocksPath {
		return reply{res: resNotFound, diag: "no such resource, blocks are at " + blocksPath + "?<REF>"}
	}
	if code != codes.GET && code != codes.PUT && code != codes.POST {
		return reply{res: resMethodNotAllowed, diag: "GET, PUT or POST"}
	}
	qs, err := r.Queries()
	if err != nil || len(qs) != 1 {
		return reply{res: resBadRequest, diag: "want one URI-Query: the block reference (52 base32 characters or 32 octets)"}
	}
	ref, err := parseRefQuery(qs[0], true)
	if err != nil {
		return reply{res: resBadRequest, diag: err.Error()}
	}
	ctx, cancel := s.storeCtx(r.Context())
	defer cancel()
	if code == codes.GET {
		return getBlock(ctx, s.store, ref)
	}
	if !s.opts.AllowPut {
		return reply{res: resMethodNotAllowed, diag: "this store is read-only"}
	}
	body, err := r.ReadBody()
	if err != nil {
		return reply{res: resBadRequest, diag: "cannot read body"}
	}
	return putBlock(ctx, s.store, ref, body)
}

func (s *Server) respondCoAP(w mux.ResponseWriter, r *mux.Message, rep reply) {
	code := coapCodes[rep.res]
	var err error
	if rep.res == resOK {
		err = w.SetResponse(code, message.AppOctets, bytes.NewReader(rep.block))
	} else {
		var body *strings.Reader
		if rep.diag != "" {
			body = strings.NewReader(rep.diag)
		}
		if body != nil {
			err = w.SetResponse(code, message.TextPlain, body)
		} else {
			err = w.SetResponse(code, message.TextPlain, nil)
		}
		if rep.res == resTooLarge {
			// RFC 7959 §2.9.3: Size1 tells the client the largest body accepted.
			w.Message().SetOptionUint32(message.Size1, eris.BlockSize32K)
		}
		lvl := s.log.Debug
		if rep.res == resInternal {
			lvl = s.log.Warn
		}
		lvl("coap request refused", "code", code.String(), "from", w.Conn().RemoteAddr(), "why", rep.diag)
	}
	if err != nil {
		s.log.Warn("coap: cannot set response", "err", err)
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
		options.WithMux(s.coapHandler(ep.blocksPath())),
		options.WithErrors(s.coapErrors),
		options.WithPeriodicRunner(l.tick.add),
		options.WithProcessReceivedMessageFunc(config.ProcessReceivedMessageFunc[*tcpclient.Conn](process)),
		// One message carries a whole 32 KiB block (BERT, RFC 8323 §6);
		// a client asking for 1 KiB blocks with Block2 gets them.
		options.WithBlockwise(true, blockwise.SZXBERT, 10*time.Second),
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
type acceptListener struct {
	l      net.Listener
	closed atomic.Bool
}

func (a *acceptListener) AcceptWithContext(ctx context.Context) (net.Conn, error) {
	for {
		if a.closed.Load() || ctx.Err() != nil {
			return nil, coapnet.ErrListenerIsClosed
		}
		c, err := a.l.Accept()
		if err == nil {
			return c, nil
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
	if !a.closed.CompareAndSwap(false, true) {
		return nil
	}
	return a.l.Close()
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
