package fetcher

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options/config"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	udpserver "github.com/plgd-dev/go-coap/v3/udp/server"
)

// udpSocketBuffer is the kernel buffer asked for on every CoAP/UDP socket.
// With dozens of block-wise transfers in flight the default (~208 KiB)
// overflows and every lost datagram costs a retransmission timeout. The
// kernel caps it at net.core.rmem_max / wmem_max.
const udpSocketBuffer = 4 << 20

// maxUDPClients bounds the per-client state a UDP listener keeps.
const maxUDPClients = 4096

// udpListener is CoAP over UDP. It does not use go-coap's udp.Server,
// whose read loop runs CheckExpirations over every structure of the
// sending client's connection for each datagram it reads, including a
// response cache that keeps every response for EXCHANGE_LIFETIME (247 s):
// the cost of a datagram grows with the number of recent responses, and
// 64 concurrent 32 KiB transfers all time out. This loop keeps one go-coap
// connection per client address, built from go-coap's exported parts
// (udp/server.NewSession, udp/client.NewConnWithOpts), without that
// response cache, and expires state once a second instead of per datagram.
//
// Without the response cache a retransmitted request is answered again
// rather than replayed: GET and PUT of content-addressed blocks are
// idempotent, so that is safe (RFC 7252 §4.5 allows it).
type udpListener struct {
	s        *Server
	raw      *net.UDPConn
	conn     *coapnet.UDPConn
	wild     bool // bound to 0.0.0.0 or [::]: read control messages to reply from the right address
	handler  *coapBlocks
	segs     []string    // the Uri-Path of the blocks resource
	batch    batchConn   // the socket in batches, when bound to one address
	noGSO    atomic.Bool // a GSO send failed: the kernel cannot
	gsoCache sync.Map    // UDP_SEGMENT control messages by size

	jobs       chan getJob // block GETs for the fast path's idle workers
	getWorkers atomic.Int64
	deadline   atomic.Pointer[sharedDeadline]

	outMu                sync.Mutex // guards the answers of workers waiting to be written
	outBusy              bool       // a worker writes them
	outPending, outSpare serverOut
	wmsgs                []ipMessage // the writer's (outBusy's) sendmmsg vector, kept
	mpool                *pool.Pool
	echo                 echoKey // makes the Echo values that verify client addresses

	ctx    context.Context
	cancel context.CancelFunc
	work   *workers

	mu      sync.Mutex
	clients map[netip.AddrPort]*udpClientState

	wg   sync.WaitGroup // read loop and sweeper
	once stopOnce
}

type udpClientState struct {
	cc       *udpclient.Conn
	done     context.CancelFunc // ends the connection's goroutines
	lastSeen atomic.Int64       // unix nanoseconds
}

// noResponseCache is a udp/client.MessageCache that keeps nothing.
type noResponseCache struct{}

func (noResponseCache) Load(string, *pool.Message) (bool, error) { return false, nil }
func (noResponseCache) Store(string, *pool.Message) error        { return nil }
func (noResponseCache) CheckExpirations(time.Time)               {}

func (s *Server) listenUDP(ep endpoint) (listener, string, error) {
	ua, err := net.ResolveUDPAddr("udp", ep.addr)
	if err != nil {
		return nil, "", err
	}
	raw, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, "", err
	}
	_ = raw.SetReadBuffer(udpSocketBuffer)
	_ = raw.SetWriteBuffer(udpSocketBuffer)
	key, err := newEchoKey()
	if err != nil {
		raw.Close()
		return nil, "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &udpListener{
		echo:    key,
		s:       s,
		raw:     raw,
		conn:    coapnet.NewUDPConn("udp", raw, coapnet.WithErrors(s.coapErrors)),
		wild:    ua.IP == nil || ua.IP.IsUnspecified(),
		handler: s.newCoAPBlocks(ep),
		mpool:   pool.New(1024, 2048),
		ctx:     ctx,
		cancel:  cancel,
		work:    newWorkers(ctx, s.opts.Workers),
		clients: make(map[netip.AddrPort]*udpClientState),
		jobs:    make(chan getJob),
	}
	for _, seg := range strings.Split(ep.blocksPath(), "/") {
		if seg != "" {
			l.segs = append(l.segs, seg)
		}
	}
	if !l.wild {
		l.batch = newBatchConn(raw, raw.LocalAddr().(*net.UDPAddr))
	}
	if s.opts.Discoverable {
		if !l.wild {
			l.s.log.Warn("a CoAP/UDP listener on a specific address cannot be discovered: listen on 0.0.0.0 or [::]", "addr", ep.addr)
		} else if err := joinAllCoAPNodes(raw, s.log); err != nil {
			l.s.log.Warn("cannot be discovered", "addr", ep.addr, "err", err)
		}
	}
	l.wg.Add(2)
	go l.readLoop()
	go l.sweep()
	return l, raw.LocalAddr().String(), nil
}

func (l *udpListener) readLoop() {
	defer l.wg.Done()
	var (
		m   message.Message
		out serverOut
	)
	if !l.wild {
		l.readBatches(&m, &out)
		return
	}
	// One byte more than the largest message, to notice oversized ones.
	buf := make([]byte, 64<<10+1)
	for {
		var (
			ra *net.UDPAddr
			cm *coapnet.ControlMessage
		)
		n, err := l.conn.ReadWithOptions(buf, coapnet.WithGetRemoteAddr(&ra), coapnet.WithGetControlMessage(&cm))
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) || errors.Is(err, coapnet.ErrConnectionIsClosed) {
				return
			}
			l.s.log.Debug("coap udp read", "err", err)
			continue
		}
		if n > 64<<10 {
			continue
		}
		l.datagram(ra.AddrPort(), cm, buf[:n], &m, &out)
		for i, b := range out.bufs {
			if err := l.write(out.addrs[i], out.cms[i], b); err != nil {
				l.s.log.Debug("coap udp: cannot answer", "to", out.addrs[i], "err", err)
			}
		}
		out.reset()
	}
}

// readBatches is the read loop of a listener bound to one address: it
// reads datagrams in batches (recvmmsg) and sends the answers made at once
// in batches (sendmmsg).
func (l *udpListener) readBatches(m *message.Message, out *serverOut) {
	bc := l.batch
	msgs := make([]ipMessage, udpBatch)
	// As in udpPeer.readLoop: a small buffer each, a large one shared.
	const small = 2048
	smalls := make([]byte, udpBatch*small)
	big := make([]byte, 64<<10+1)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{smalls[i*small : (i+1)*small : (i+1)*small], big}
	}
	dgram := make([]byte, 0, 64<<10+1)
	wmsgs := make([]ipMessage, 0, udpBatch)
	for {
		n, err := bc.ReadBatch(msgs, 0)
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			l.s.log.Debug("coap udp read", "err", err)
			continue
		}
		bigUsers := 0
		for i := range n {
			if msgs[i].N > small {
				bigUsers++
			}
		}
		for i := range n {
			ua, ok := msgs[i].Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			var b []byte
			switch mn := msgs[i].N; {
			case mn <= small:
				b = msgs[i].Buffers[0][:mn]
			case mn > 64<<10 || bigUsers > 1:
				continue // too large, or its tail overwritten: as if lost
			default:
				b = append(append(dgram[:0], msgs[i].Buffers[0]...), big[:mn-small]...)
			}
			l.datagram(ua.AddrPort(), nil, b, m, out)
		}
		l.flush(bc, out, wmsgs)
		out.reset()
	}
}

// datagram handles one datagram from ap.
func (l *udpListener) datagram(ap netip.AddrPort, cm *coapnet.ControlMessage, b []byte, m *message.Message, out *serverOut) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if cm != nil && cm.Dst.IsMulticast() {
		l.multicast(ap, cm, b)
		return
	}
	st := l.known(ap)
	if st == nil {
		if st = l.admit(ap, cm, b); st == nil {
			return
		}
	}
	st.lastSeen.Store(time.Now().UnixNano())
	if l.fast(ap, cm, b, m, out) {
		return
	}
	if err := st.cc.Process(cm, b); err != nil {
		var malformed *udpclient.MalformedMessageError
		if !errors.As(err, &malformed) {
			l.drop(ap, st)
		}
		l.s.log.Debug("coap udp datagram dropped", "from", ap, "err", err)
	}
}

// known returns the connection state of a verified client address.
func (l *udpListener) known(ap netip.AddrPort) *udpClientState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.clients[ap]
}

// admit decides about a datagram from an address without state: a request
// with a valid Echo value for the address (or any datagram when the server
// trusts sources) makes the address a client, whose state it returns.
// Otherwise it answers a request with 4.01 and an Echo option, a ping with
// a reset, when the answer is at most echoMaxRatio times the datagram, and
// returns nil.
func (l *udpListener) admit(ap netip.AddrPort, cm *coapnet.ControlMessage, dgram []byte) *udpClientState {
	if l.s.opts.TrustUDPSources {
		return l.client(ap)
	}
	var req message.Message
	for size := 16; ; size *= 4 {
		req.Options = make(message.Options, 0, size)
		_, err := coder.DefaultCoder.Decode(dgram, &req)
		if err == nil {
			break
		}
		if !errors.Is(err, message.ErrOptionsTooSmall) || size > 1024 {
			l.s.log.Debug("coap udp datagram dropped", "from", ap, "err", err)
			return nil
		}
	}
	now := time.Now()
	var resp message.Message
	switch {
	case req.Code == codes.Empty && req.Type == message.Confirmable:
		// A ping (RFC 7252 §4.3): a reset, of its size.
		resp = message.Message{Type: message.Reset, MessageID: req.MessageID, Code: codes.Empty}
	case req.Code < codes.GET || req.Code > codes.IPATCH || req.Type == message.Acknowledgement || req.Type == message.Reset:
		return nil // not a request: nothing to answer
	case isCoreRequest(&req):
		// Discovery (unicast): a small answer, no state.
		if a := l.handler.answerCore(&req, false); a != nil {
			resp = *a
		}
	default:
		if echo, err := req.Options.GetBytes(message.Echo); err == nil && l.echo.valid(echo, ap.Addr(), now) {
			return l.client(ap)
		}
		resp = message.Message{Type: message.NonConfirmable, MessageID: int32(message.GetMID()), Token: req.Token, Code: codes.Unauthorized}
		if req.Type == message.Confirmable {
			resp.Type, resp.MessageID = message.Acknowledgement, req.MessageID
		}
		resp.Options = message.Options{{ID: message.Echo, Value: l.echo.value(ap.Addr(), now)}}
	}
	l.sendSmall(ap, cm, resp, len(dgram))
	return nil
}

// multicast handles a datagram sent to a group: a discovery request of a
// discoverable listener is answered (statelessly, within the reflection
// bound); anything else is dropped.
func (l *udpListener) multicast(ap netip.AddrPort, cm *coapnet.ControlMessage, dgram []byte) {
	if !l.s.opts.Discoverable {
		return
	}
	req := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(dgram, &req); err != nil || !isCoreRequest(&req) {
		return
	}
	if resp := l.handler.answerCore(&req, true); resp != nil {
		l.s.stats.discoveries.Add(1)
		l.sendSmall(ap, cm, *resp, len(dgram))
	}
}

// sendSmall sends resp to an unverified source if it is at most
// echoMaxRatio times the size of the datagram it answers.
func (l *udpListener) sendSmall(ap netip.AddrPort, cm *coapnet.ControlMessage, resp message.Message, reqLen int) {
	size, err := coder.DefaultCoder.Size(resp)
	if err != nil {
		return
	}
	if size > echoMaxRatio*reqLen {
		l.s.stats.echoDropped.Add(1)
		return
	}
	out := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(resp, out); err != nil {
		return
	}
	if resp.Code == codes.Unauthorized {
		l.s.stats.echoChallenges.Add(1)
	}
	if l.wild && cm != nil {
		reply := &coapnet.ControlMessage{IfIndex: cm.IfIndex}
		if !cm.Dst.IsMulticast() {
			reply.Src = cm.Dst
		}
		err = l.conn.WriteWithOptions(out, coapnet.WithRemoteAddr(net.UDPAddrFromAddrPort(ap)), coapnet.WithControlMessage(reply))
	} else {
		_, err = l.raw.WriteToUDPAddrPort(out, ap)
	}
	if err != nil {
		l.s.log.Debug("coap udp: cannot answer an unverified source", "to", ap, "err", err)
	}
}

// client returns the connection state for a client address, creating it.
func (l *udpListener) client(ap netip.AddrPort) *udpClientState {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.clients[ap]; st != nil {
		return st
	}
	if len(l.clients) >= maxUDPClients || l.ctx.Err() != nil {
		return nil
	}
	done, cancel := context.WithCancel(context.Background())
	cfg := udpclient.DefaultConfig
	cfg.Handler = mux.ToHandler[*udpclient.Conn](l.handler)
	cfg.Errors = l.s.coapErrors
	cfg.MessagePool = l.mpool
	cfg.BlockwiseEnable = false // ours: coap_blockwise.go
	cfg.ReceivedMessageQueueSize = 64
	cfg.ProcessReceivedMessage = func(req *pool.Message, cc *udpclient.Conn, h config.HandlerFunc[*udpclient.Conn]) {
		if continuesBlock2(req) {
			// Almost always served from the block cache: a goroutine
			// per datagram costs more than it saves (measured +50%).
			cc.ProcessReceivedMessageWithHandler(req, h)
			return
		}
		l.work.run(func() { cc.ProcessReceivedMessageWithHandler(req, h) }, func() { cc.ReleaseMessage(req) })
	}
	session := udpserver.NewSession(l.ctx, done, l.conn, net.UDPAddrFromAddrPort(ap), cfg.MaxMessageSize, cfg.MTU, false, l.s.coapErrors)
	cc := udpclient.NewConnWithOpts(session, &cfg, udpclient.WithResponseMessageCache(noResponseCache{}))
	st := &udpClientState{cc: cc, done: cancel}
	l.clients[ap] = st
	return st
}

// continuesBlock2 reports whether req asks for a later block of a GET,
// which the block cache of coapBlocks answers without the store.
func continuesBlock2(req *pool.Message) bool {
	if req.Code() != codes.GET {
		return false
	}
	v, err := req.GetOptionUint32(message.Block2)
	return err == nil && v>>4 > 0
}

// drop forgets a client and ends its connection.
func (l *udpListener) drop(ap netip.AddrPort, st *udpClientState) {
	l.mu.Lock()
	if l.clients[ap] == st {
		delete(l.clients, ap)
	}
	l.mu.Unlock()
	_ = st.cc.Close()
	st.done()
}

// sweep expires go-coap's per-connection state once a second and forgets
// clients silent for IdleTimeout.
func (l *udpListener) sweep() {
	defer l.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case now := <-t.C:
			l.mu.Lock()
			all := make(map[netip.AddrPort]*udpClientState, len(l.clients))
			for ap, st := range l.clients {
				all[ap] = st
			}
			l.mu.Unlock()
			idle := now.Add(-l.s.opts.IdleTimeout).UnixNano()
			for ap, st := range all {
				if st.lastSeen.Load() < idle || st.cc.Context().Err() != nil {
					l.drop(ap, st)
					continue
				}
				st.cc.CheckExpirations(now)
			}
		}
	}
}

func (l *udpListener) stop() {
	l.once.do(func() {
		l.cancel()
		_ = l.raw.Close()
		l.wg.Wait()
		l.mu.Lock()
		all := l.clients
		l.clients = make(map[netip.AddrPort]*udpClientState)
		l.mu.Unlock()
		for _, st := range all {
			_ = st.cc.Close()
			st.done()
		}
		l.work.wait()
	})
}
