package fetcher

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"erismount/eris"
)

// udpPeer is a CoAP block store over UDP (RFC 7252), without go-coap's
// client connection: go-coap's per-message machinery (a goroutine hand-off
// and several allocations per datagram, a write syscall per message) cost
// about 45 µs of CPU for each of the 32 exchanges of a 32 KiB block.
// go-coap's coder still encodes and decodes every message.
//
// The peer has a few sockets, each read by one goroutine in batches
// (recvmmsg). A response is matched to its request by token (an empty ACK
// or a reset by message ID), and handled where it is read: the payload of
// a Block2 part (RFC 7959) goes straight into the block being assembled,
// and the next parts are sent from there, in batches (sendmmsg); the
// caller of GetBlock wakes once, when the block is whole or failed.
//
// Requests are confirmable: each is retransmitted after ACK_TIMEOUT (times
// a random factor up to 1.5), the timeout doubling each time, at most
// MaxRetransmit times (RFC 7252 §4.2). The requests in flight to the peer
// are bounded by a congestion window (aimdWindow): it grows with every
// answer and halves when a request has to be retransmitted.
type udpPeer struct {
	url  string
	ep   endpoint
	opts ClientOptions
	log  *slog.Logger
	sem  inFlight
	path []message.Option // Uri-Path of the blocks resource

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // socket readers and the timer

	mu      sync.Mutex
	closed  bool
	socks   []*udpSock // created on first use
	next    int        // socket for the next transfer
	tokens  map[uint64]*udpExchange
	queue   []*udpExchange // waiting for room in the window
	win     aimdWindow
	echo    []byte // the last Echo value the server asked for (RFC 9175)
	rng     *rand.ChaCha8
	timerOn bool
	noGSO   atomic.Bool // a GSO send failed: the kernel cannot

	outMu                sync.Mutex // guards the datagrams waiting to be written
	outBusy              bool       // someone writes them
	outPending, outSpare sendList
	// msgs is the writer's (outBusy's) sendmmsg vector, kept: a new one
	// for every flush was most of the client's allocation per 1 KiB block.
	msgs     [udpBatch]ipMessage
	retrans  uint64 // retransmissions sent
	timeouts uint64 // exchanges given up after MaxRetransmit
}

// udpSock is one socket of a udpPeer. Its fields other than c and batch
// are guarded by the peer's mu.
type udpSock struct {
	idx   int
	c     *net.UDPConn
	batch batchConn
	gro   bool // the kernel may coalesce datagrams (UDP_GRO)
	mid   uint16
	mids  map[uint16]*udpExchange
}

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchConn interface {
	ReadBatch(ms []ipMessage, flags int) (int, error)
	WriteBatch(ms []ipMessage, flags int) (int, error)
}

// udpExchange is one confirmable request and its retransmissions.
type udpExchange struct {
	t       *udpTransfer
	sock    *udpSock
	num     int64 // the part asked for; -1: the first request of a GET
	token   uint64
	mid     uint16
	req     []byte // the datagram; replaced, never changed, once sent
	seq     uint64 // the window's count of requests when first sent
	timeout time.Duration
	due     time.Time // next retransmission (or, once acked, giving up)
	retries int
	acked   bool // an empty ACK came: the answer follows separately
	echoed  bool // sent again with the server's Echo value
	live    bool // in p.tokens (in flight)
	dead    bool // its transfer ended: skip when queued
}

// udpTransfer is one GetBlock or PutBlock: the exchanges it takes, and
// what they brought.
type udpTransfer struct {
	sock  *udpSock
	query []byte // Uri-Query: the reference
	put   []byte // the block, for a PUT
	done  chan struct{}
	err   error
	ended bool
	live  []*udpExchange // sent or queued, not answered

	// GET: the block assembled from Block2 parts of bs bytes.
	body        []byte
	szx         blockwise.SZX
	bs          int64
	total       int64 // announced by Size2; -1 unknown (the parts come in turn)
	count, next int64 // parts in all (when total is known), next to ask for
	got         int64 // parts received
	window      int64 // parts asked for at once
}

// ipMessage is x/net's socket.Message, as both ipv4 and ipv6 name it.
type ipMessage = ipv4Message

const (
	udpBatch     = 32   // datagrams per recvmmsg
	udpGROBatch  = 4    // buffers per recvmmsg with GRO, each up to 64 KiB
	udpSmallBuf  = 1536 // a Block2 part of 1 KiB with its header fits
	udpMaxDgram  = 64 << 10
	udpTokenSize = 8
)

func newUDPPeer(ep endpoint, opts ClientOptions) *udpPeer {
	ctx, cancel := context.WithCancel(context.Background())
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	p := &udpPeer{
		url:    ep.String(),
		ep:     ep,
		opts:   opts,
		log:    opts.Logger,
		sem:    make(inFlight, opts.MaxInFlight),
		ctx:    ctx,
		cancel: cancel,
		socks:  make([]*udpSock, opts.Conns),
		tokens: make(map[uint64]*udpExchange),
		rng:    rand.NewChaCha8(seed),
		win:    newAIMDWindow(opts.MaxInFlight),
	}
	for _, s := range strings.Split(ep.blocksPath(), "/") {
		if s != "" {
			p.path = append(p.path, message.Option{ID: message.URIPath, Value: []byte(s)})
		}
	}
	return p
}

func (p *udpPeer) URL() string   { return p.url }
func (*udpPeer) verifiesBlocks() {}
func (p *udpPeer) windowState() aimdWindow {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.win
}

// retransmissions returns how many requests were sent again.
func (p *udpPeer) retransmissions() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.retrans
}

// GetBlock fetches and verifies one block.
func (p *udpPeer) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	return getVerified(ctx, p.url, ref, p.get)
}

// PutBlock stores a block: a 32 KiB block goes as 32 Block1 parts of 1 KiB
// (RFC 7959), one after another.
func (p *udpPeer) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	_, err := p.run(ctx, ref, block)
	return putNamed(p.url, ref, err)
}

func (p *udpPeer) get(ctx context.Context, ref eris.Ref) ([]byte, error) {
	return p.run(ctx, ref, nil)
}

// run does one transfer: a GET when put is nil, else a PUT.
func (p *udpPeer) run(ctx context.Context, ref eris.Ref, put []byte) ([]byte, error) {
	if err := p.sem.acquire(ctx, p.ctx.Done()); err != nil {
		return nil, err
	}
	defer p.sem.release()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t := &udpTransfer{query: []byte(ref.String()), put: put, done: make(chan struct{}), total: -1}
	var out sendList
	p.mu.Lock()
	s, err := p.sockLocked()
	if err != nil {
		p.mu.Unlock()
		return nil, err
	}
	t.sock = s
	first := int64(-1)
	if put != nil {
		first = 0
	}
	p.issueLocked(t, first)
	p.pumpLocked(&out)
	p.mu.Unlock()
	p.send(&out)

	select {
	case <-t.done:
	case <-ctx.Done():
		p.endTransfer(t, ctx.Err())
	case <-p.ctx.Done():
		p.endTransfer(t, ErrClosed)
	}
	<-t.done
	if t.err != nil {
		return nil, t.err
	}
	return t.body, nil
}

func (p *udpPeer) endTransfer(t *udpTransfer, err error) {
	p.mu.Lock()
	p.finishLocked(t, err)
	p.mu.Unlock()
}

// sockLocked returns the socket for a new transfer, opening it (and the
// goroutines that serve it) on first use.
func (p *udpPeer) sockLocked() (*udpSock, error) {
	if p.closed {
		return nil, ErrClosed
	}
	i := p.next % len(p.socks)
	p.next++
	if s := p.socks[i]; s != nil {
		return s, nil
	}
	ra, err := net.ResolveUDPAddr("udp", p.ep.addr)
	if err != nil {
		return nil, err
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(udpSocketBuffer)
	_ = c.SetWriteBuffer(udpSocketBuffer)
	s := &udpSock{idx: i, c: c, batch: newBatchConn(c, ra), gro: enableGRO(c), mid: uint16(p.rng.Uint64()), mids: make(map[uint16]*udpExchange)}
	p.socks[i] = s
	p.wg.Add(1)
	go p.readLoop(s)
	if !p.timerOn {
		p.timerOn = true
		p.wg.Add(1)
		go p.timerLoop()
	}
	return s, nil
}

// issueLocked queues the exchange for part num of t (-1: the first GET).
func (p *udpPeer) issueLocked(t *udpTransfer, num int64) {
	ex := &udpExchange{t: t, sock: t.sock, num: num}
	t.live = append(t.live, ex)
	p.queue = append(p.queue, ex)
}

// pumpLocked sends queued exchanges while the window has room.
func (p *udpPeer) pumpLocked(out *sendList) {
	n := 0
	for n < len(p.queue) && p.win.room() {
		ex := p.queue[n]
		n++
		if ex.dead {
			continue
		}
		if err := p.startLocked(ex); err != nil {
			p.finishLocked(ex.t, err)
			continue
		}
		out.add(ex)
	}
	if n > 0 {
		clear(p.queue[:n])
		p.queue = p.queue[n:]
		if len(p.queue) == 0 {
			p.queue = p.queue[:0:0] // let the backing array go
		}
	}
}

// startLocked gives ex a token, a message ID and its datagram, and puts it
// in flight.
func (p *udpPeer) startLocked(ex *udpExchange) error {
	for {
		ex.token = p.rng.Uint64()
		if _, dup := p.tokens[ex.token]; !dup {
			break
		}
	}
	p.newMIDLocked(ex)
	if err := p.encodeLocked(ex); err != nil {
		delete(ex.sock.mids, ex.mid)
		return err
	}
	p.tokens[ex.token] = ex
	ex.live = true
	ex.seq = p.win.sent()
	ex.timeout = p.opts.AckTimeout + time.Duration(p.rng.Uint64()%uint64(p.opts.AckTimeout/2+1))
	ex.due = time.Now().Add(ex.timeout)
	return nil
}

func (p *udpPeer) newMIDLocked(ex *udpExchange) {
	s := ex.sock
	for {
		s.mid++
		if _, dup := s.mids[s.mid]; !dup {
			break
		}
	}
	ex.mid = s.mid
	s.mids[ex.mid] = ex
}

// encodeLocked makes the datagram of ex.
func (p *udpPeer) encodeLocked(ex *udpExchange) error {
	t := ex.t
	var tok [udpTokenSize]byte
	binary.BigEndian.PutUint64(tok[:], ex.token)
	var optBuf [64]byte
	ob := optBuf[:0]
	uint32Opt := func(id message.OptionID, v uint32) message.Option {
		start := len(ob)
		var b [4]byte
		n, _ := message.EncodeUint32(b[:], v)
		ob = append(ob, b[:n]...)
		return message.Option{ID: id, Value: ob[start:len(ob):len(ob)]}
	}
	opts := make(message.Options, 0, len(p.path)+6)
	opts = append(opts, p.path...)
	m := message.Message{Token: tok[:], Type: message.Confirmable, MessageID: int32(ex.mid), Code: codes.GET}
	if t.put != nil {
		m.Code = codes.PUT
		opts = append(opts, uint32Opt(message.ContentFormat, uint32(message.AppOctets)))
	}
	opts = append(opts, message.Option{ID: message.URIQuery, Value: t.query})
	switch {
	case t.put != nil && len(t.put) > eris.BlockSize1K:
		off := ex.num * eris.BlockSize1K
		end := min(off+eris.BlockSize1K, int64(len(t.put)))
		v, err := blockwise.EncodeBlockOption(blockwise.SZX1024, ex.num, end < int64(len(t.put)))
		if err != nil {
			return err
		}
		opts = append(opts, uint32Opt(message.Block1, v))
		opts = append(opts, uint32Opt(message.Size1, uint32(len(t.put))))
		m.Payload = t.put[off:end]
	case t.put != nil:
		m.Payload = t.put
	case ex.num >= 0:
		v, err := blockwise.EncodeBlockOption(t.szx, ex.num, false)
		if err != nil {
			return err
		}
		opts = append(opts, uint32Opt(message.Block2, v))
	}
	if p.echo != nil {
		opts = append(opts, message.Option{ID: message.Echo, Value: p.echo})
	}
	m.Options = opts
	b, err := encodeCoAPMessage(m, make([]byte, 0, 160+len(m.Payload)))
	ex.req = b
	return err
}

// encodeCoAPMessage encodes m into buf, grown if it is too small. (go-coap's
// Encode sizes the message itself: sizing it before costs that again.)
func encodeCoAPMessage(m message.Message, buf []byte) ([]byte, error) {
	n, err := coder.DefaultCoder.Encode(m, buf[:cap(buf)])
	if errors.Is(err, message.ErrTooSmall) && n > cap(buf) {
		buf = make([]byte, n)
		n, err = coder.DefaultCoder.Encode(m, buf)
	}
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// releaseLocked takes ex out of flight (answered, failed or cancelled).
func (p *udpPeer) releaseLocked(ex *udpExchange) {
	ex.dead = true
	if !ex.live {
		return
	}
	ex.live = false
	delete(p.tokens, ex.token)
	if ex.sock.mids[ex.mid] == ex {
		delete(ex.sock.mids, ex.mid)
	}
	p.win.release()
	t := ex.t
	for i, e := range t.live {
		if e == ex {
			t.live[i] = t.live[len(t.live)-1]
			t.live[len(t.live)-1] = nil
			t.live = t.live[:len(t.live)-1]
			break
		}
	}
}

// finishLocked ends t with err (nil: success), taking its exchanges out.
func (p *udpPeer) finishLocked(t *udpTransfer, err error) {
	if t.ended {
		return
	}
	t.ended = true
	t.err = err
	for _, ex := range t.live {
		ex.dead = true
		if ex.live {
			ex.live = false
			delete(p.tokens, ex.token)
			if ex.sock.mids[ex.mid] == ex {
				delete(ex.sock.mids, ex.mid)
			}
			p.win.release()
		}
	}
	t.live = nil
	close(t.done)
}

// sendList collects datagrams to send once the lock is released.
type sendList struct {
	reqs []sendReq
	acks []sendReq
}

type sendReq struct {
	sock *udpSock
	ex   *udpExchange // nil for an ACK
	b    []byte
}

func (l *sendList) add(ex *udpExchange) {
	l.reqs = append(l.reqs, sendReq{ex.sock, ex, ex.req})
}

func (l *sendList) reset() {
	clear(l.reqs)
	clear(l.acks)
	l.reqs, l.acks = l.reqs[:0], l.acks[:0]
}

// send writes the collected datagrams. Whoever finds nobody writing
// writes what the others add meanwhile too (flat combining): requests of
// many callers go out in one batch, without a writer goroutine to hand
// them to.
func (p *udpPeer) send(l *sendList) {
	if len(l.reqs) == 0 && len(l.acks) == 0 {
		return
	}
	p.outMu.Lock()
	p.outPending.reqs = append(p.outPending.reqs, l.reqs...)
	p.outPending.acks = append(p.outPending.acks, l.acks...)
	if p.outBusy {
		p.outMu.Unlock()
		return
	}
	p.outBusy = true
	for len(p.outPending.reqs) > 0 || len(p.outPending.acks) > 0 {
		batch := p.outPending
		p.outPending, p.outSpare = p.outSpare, sendList{}
		p.outMu.Unlock()
		p.sendNow(&batch)
		batch.reset()
		p.outMu.Lock()
		p.outSpare = batch
	}
	p.outBusy = false
	p.outMu.Unlock()
}

// sendNow writes the collected datagrams, in batches per socket (sendmmsg);
// requests of one size on one socket go as one buffer with UDP_SEGMENT
// (GSO) where the kernel can. A socket error (an ICMP error reported on
// send) fails the transfers concerned; a datagram not sent for another
// reason is left to retransmission.
func (p *udpPeer) sendNow(l *sendList) {
	gso := gsoSupported && !p.noGSO.Load()
	if len(l.reqs) > 1 {
		slices.SortStableFunc(l.reqs, func(a, b sendReq) int {
			if c := cmp.Compare(a.sock.idx, b.sock.idx); c != 0 {
				return c
			}
			return cmp.Compare(len(a.b), len(b.b))
		})
	}
	var failed []sockErr
	p.flush(l.reqs, gso, &failed)
	p.flush(l.acks, false, &failed)
	for _, f := range failed {
		p.failSock(f.s, f.err)
	}
}

// sockErr is a socket error a send reported.
type sockErr struct {
	s   *udpSock
	err error
}

// flush writes reqs, grouped by socket (and, with gso, by size). A send
// that fails with a socket error (a pending ICMP error: the kernel did not
// send it) is recorded in failed: like one reported by a read, it fails
// every transfer on the socket, as the error may stand for several
// requests.
func (p *udpPeer) flush(reqs []sendReq, gso bool, failed *[]sockErr) {
	msgs := &p.msgs // only the writer flushes; a nested flush (below) starts after msgs was read
	defer clear(msgs[:])
	bufs := make([][]byte, len(reqs))
	for i, r := range reqs {
		bufs[i] = r.b
	}
	for len(reqs) > 0 {
		s := reqs[0].sock
		// One socket's datagrams, as messages of one or a train of them.
		k, start := 0, 0
		var firsts [udpBatch]int
		for start < len(reqs) && reqs[start].sock == s && k < udpBatch {
			end := start + 1
			if gso {
				size := len(reqs[start].b)
				for end < len(reqs) && reqs[end].sock == s && len(reqs[end].b) == size &&
					end-start < gsoMaxSegments && (end-start+1)*size <= gsoMaxBytes {
					end++
				}
			}
			msgs[k] = ipMessage{Buffers: bufs[start:end:end]}
			if end-start > 1 {
				msgs[k].OOB = gsoOOB(len(reqs[start].b))
			}
			firsts[k] = start
			k++
			start = end
		}
		n, err := s.batch.WriteBatch(msgs[:k], 0)
		n = max(n, 0) // -1 when the first one failed
		if err != nil && isClosedErr(err) {
			return
		}
		if err != nil && n < k {
			m := msgs[n]
			from, to := firsts[n], firsts[n]+len(m.Buffers)
			switch {
			case m.OOB != nil && gsoError(err):
				// No GSO here after all: those one by one, and no more.
				p.noGSO.Store(true)
				p.flush(reqs[from:to], false, failed)
			default:
				*failed = append(*failed, sockErr{s, socketErr(err)})
			}
			n++
		}
		next := start
		if n < k {
			next = firsts[n]
		}
		reqs, bufs = reqs[next:], bufs[next:]
	}
}

// readLoop reads the datagrams of one socket and handles them.
func (p *udpPeer) readLoop(s *udpSock) {
	defer p.wg.Done()
	msgs := make([]ipMessage, udpBatch)
	// Without GRO each datagram has a small buffer of its own and shares a
	// large one for the rest: a response of more than udpSmallBuf bytes (a
	// whole block at once, from another server) is whole if it is the only
	// one of its batch that large. With GRO a buffer may hold a train of
	// datagrams: fewer, each of the largest size.
	var small, big []byte
	if s.gro {
		msgs = msgs[:udpGROBatch]
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, udpMaxDgram+1)}
			msgs[i].OOB = make([]byte, 64)
		}
	} else {
		small = make([]byte, udpBatch*udpSmallBuf)
		big = make([]byte, udpMaxDgram+1)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{small[i*udpSmallBuf : (i+1)*udpSmallBuf : (i+1)*udpSmallBuf], big}
		}
	}
	dgram := make([]byte, 0, udpMaxDgram+1)
	var in message.Message
	var out sendList
	for {
		n, err := s.batch.ReadBatch(msgs, 0)
		if err != nil {
			if p.ctx.Err() != nil || isClosedErr(err) {
				return
			}
			// An ICMP error (port unreachable: nobody listens): fail
			// the transfers on this socket, as go-coap failed the
			// connection.
			p.failSock(s, socketErr(err))
			continue
		}
		bigUsers := 0
		for i := range n {
			if msgs[i].N > udpSmallBuf {
				bigUsers++
			}
		}
		p.mu.Lock()
		for i := range n {
			m := &msgs[i]
			if s.gro {
				if m.N > udpMaxDgram || m.Flags&syscall.MSG_TRUNC != 0 {
					continue
				}
				b := m.Buffers[0][:m.N]
				seg := groSize(m.OOB[:m.NN])
				if seg <= 0 {
					seg = len(b)
				}
				for len(b) > 0 {
					k := min(seg, len(b))
					p.handleLocked(s, b[:k], &in, &out)
					b = b[k:]
				}
				continue
			}
			var b []byte
			switch {
			case m.N <= udpSmallBuf:
				b = m.Buffers[0][:m.N]
			case m.N > udpMaxDgram || bigUsers > 1:
				continue // too large, or its tail overwritten: as if lost
			default:
				b = append(append(dgram[:0], m.Buffers[0]...), big[:m.N-udpSmallBuf]...)
			}
			p.handleLocked(s, b, &in, &out)
		}
		p.pumpLocked(&out)
		p.mu.Unlock()
		p.send(&out)
		out.reset()
	}
}

// failSock fails the transfers with a request in flight (or about to be
// sent) on s.
func (p *udpPeer) failSock(s *udpSock, err error) {
	p.mu.Lock()
	var ts []*udpTransfer
	for _, ex := range s.mids {
		ts = append(ts, ex.t)
	}
	for _, t := range ts {
		p.finishLocked(t, err)
	}
	var out sendList
	p.pumpLocked(&out)
	p.mu.Unlock()
	p.send(&out)
}

// handleLocked handles one datagram read from s.
func (p *udpPeer) handleLocked(s *udpSock, b []byte, m *message.Message, out *sendList) {
	if cap(m.Options) < 16 {
		m.Options = make(message.Options, 0, 16)
	}
	m.Options = m.Options[:0]
	if _, err := coder.DefaultCoder.Decode(b, m); err != nil {
		if !errors.Is(err, message.ErrOptionsTooSmall) {
			p.log.Debug("coap udp: undecodable datagram", "peer", p.url, "err", err)
			return
		}
		m.Options = make(message.Options, 0, 256)
		if _, err := coder.DefaultCoder.Decode(b, m); err != nil {
			return
		}
	}
	if m.Code == codes.Empty {
		ex := s.mids[uint16(m.MessageID)]
		if ex == nil {
			return
		}
		switch m.Type {
		case message.Acknowledgement:
			// The answer comes later, as its own message: stop
			// retransmitting, wait up to EXCHANGE_LIFETIME-ish.
			if !ex.acked {
				ex.acked = true
				ex.due = time.Now().Add(exchangeWait(p.opts))
			}
		case message.Reset:
			p.finishLocked(ex.t, errors.New("peer reset the request"))
		}
		return
	}
	if m.Type == message.Confirmable {
		// A separate response: acknowledge it (again, if a duplicate).
		ack := make([]byte, 4)
		ack[0] = 1<<6 | byte(message.Acknowledgement)<<4
		binary.BigEndian.PutUint16(ack[2:], uint16(m.MessageID))
		out.acks = append(out.acks, sendReq{sock: s, b: ack})
	}
	if len(m.Token) != udpTokenSize || m.Type == message.Reset {
		return
	}
	ex := p.tokens[binary.BigEndian.Uint64(m.Token)]
	if ex == nil || ex.sock != s {
		return // late, duplicate or unknown
	}
	t := ex.t
	if m.Code == codes.Unauthorized && !ex.echoed {
		// RFC 9175 §2.4: the server verifies that we receive at our
		// address; ask again at once with its Echo value, which is also
		// sent with every later request.
		if echo, err := m.Options.GetBytes(message.Echo); err == nil && len(echo) > 0 && len(echo) <= 40 {
			p.echo = append([]byte(nil), echo...)
			ex.echoed = true
			delete(s.mids, ex.mid)
			p.newMIDLocked(ex)
			if err := p.encodeLocked(ex); err != nil {
				p.finishLocked(t, err)
				return
			}
			ex.retries, ex.acked = 0, false
			ex.due = time.Now().Add(ex.timeout)
			out.add(ex)
			return
		}
	}
	p.releaseLocked(ex)
	p.win.success()
	if t.ended {
		return
	}
	if t.put != nil {
		p.putAnswerLocked(t, ex.num, m)
		return
	}
	if err := p.getAnswerLocked(t, ex.num, m); err != nil {
		p.finishLocked(t, err)
		return
	}
	switch {
	case t.count > 0 && t.got == t.count:
		p.finishLocked(t, nil)
	case t.total < 0: // no Size2: the parts in turn
		p.issueLocked(t, t.next)
		t.next++
	default:
		for t.next < t.count && int64(len(t.live)) < t.window {
			p.issueLocked(t, t.next)
			t.next++
		}
	}
}

// getAnswerLocked takes a response to a GET exchange for part num.
func (p *udpPeer) getAnswerLocked(t *udpTransfer, num int64, m *message.Message) error {
	switch m.Code {
	case codes.Content:
	case codes.NotFound:
		return eris.ErrNotFound
	default:
		return statusErrOf(m.Code, m.Payload)
	}
	opt, err := m.Options.GetUint32(message.Block2)
	if num < 0 {
		if err != nil { // the whole block at once
			if len(m.Payload) > eris.BlockSize32K {
				return fmt.Errorf("%w: response of %d bytes", eris.ErrCorrupt, len(m.Payload))
			}
			t.body = append([]byte(nil), m.Payload...)
			t.got, t.count = 1, 1
			return nil
		}
		if t.szx, _, _, err = blockwise.DecodeBlockOption(opt); err != nil {
			return err
		}
		t.bs = blockSize(t.szx)
		if s2, err := m.Options.GetUint32(message.Size2); err == nil {
			if s2 > eris.BlockSize32K {
				return fmt.Errorf("%w: peer announces %d bytes", eris.ErrCorrupt, s2)
			}
			t.total = int64(s2)
		}
		t.body = make([]byte, 0, eris.BlockSize32K)
		if t.total >= 0 {
			t.body = t.body[:0:t.total]
		}
		num = 0
	} else if err != nil {
		return errors.New("peer stopped block-wise transfer")
	}
	body, more, err := placeBlock2(t.body, t.szx, t.bs, num, t.total, opt, m.Payload)
	if err != nil {
		return err
	}
	t.body = body
	t.got++
	if num == 0 {
		if !more {
			t.count = t.got
			return nil
		}
		t.next = 1
		if t.total >= 0 {
			t.count = (t.total + t.bs - 1) / t.bs
			t.body = t.body[:t.total]
			t.window = int64(p.opts.BlockWindow)
		}
		return nil
	}
	if t.total < 0 && !more {
		t.count = t.got
	}
	return nil
}

// putAnswerLocked takes the response to part num of a PUT.
func (p *udpPeer) putAnswerLocked(t *udpTransfer, num int64, m *message.Message) {
	chunked := len(t.put) > eris.BlockSize1K
	more := chunked && (num+1)*eris.BlockSize1K < int64(len(t.put))
	switch {
	case more && m.Code == codes.Continue:
		p.issueLocked(t, num+1)
	case !more && (m.Code == codes.Created || m.Code == codes.Changed):
		p.finishLocked(t, nil)
	default:
		p.finishLocked(t, statusErrOf(m.Code, m.Payload))
	}
}

// timerLoop retransmits requests that are due, and gives up on those
// retransmitted MaxRetransmit times.
func (p *udpPeer) timerLoop() {
	defer p.wg.Done()
	tick := min(max(p.opts.AckTimeout/4, 5*time.Millisecond), 250*time.Millisecond)
	tk := time.NewTicker(tick)
	defer tk.Stop()
	var out sendList
	for {
		select {
		case <-p.ctx.Done():
			return
		case now := <-tk.C:
			p.mu.Lock()
			var failed []*udpExchange
			for _, ex := range p.tokens {
				if now.Before(ex.due) {
					continue
				}
				if ex.acked || ex.retries >= p.opts.MaxRetransmit {
					failed = append(failed, ex)
					continue
				}
				ex.retries++
				ex.timeout *= 2
				ex.due = now.Add(ex.timeout)
				p.retrans++
				p.win.loss(ex.seq)
				out.add(ex)
			}
			for _, ex := range failed {
				p.timeouts++
				p.finishLocked(ex.t, &retransmitError{n: ex.retries})
			}
			p.pumpLocked(&out)
			p.mu.Unlock()
			p.send(&out)
			out.reset()
		}
	}
}

// exchangeWait is how long an acknowledged request waits for its separate
// response: the whole retransmission span again (RFC 7252 §4.8.2's
// MAX_TRANSMIT_WAIT), at least 5 s.
func exchangeWait(o ClientOptions) time.Duration {
	return max(o.AckTimeout*time.Duration(3*(1<<o.MaxRetransmit)-1)/2, 5*time.Second)
}

// retransmitError is a request the peer did not answer, sent 1 + n times.
type retransmitError struct{ n int }

func (e *retransmitError) Error() string {
	return fmt.Sprintf("no answer to a request sent %d times", e.n+1)
}

// Is makes it a timeout for the pool's accounting.
func (e *retransmitError) Is(target error) bool { return target == context.DeadlineExceeded }

// Close closes the peer's sockets and waits for their goroutines; the
// transfers in flight fail with ErrClosed.
func (p *udpPeer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.cancel()
	ts := map[*udpTransfer]struct{}{}
	for _, ex := range p.tokens {
		ts[ex.t] = struct{}{}
	}
	for _, ex := range p.queue {
		ts[ex.t] = struct{}{}
	}
	for t := range ts {
		p.finishLocked(t, ErrClosed)
	}
	p.queue = nil
	for _, s := range p.socks {
		if s != nil {
			_ = s.c.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// socketErr reduces a socket error to its errno when it has one: the
// local port, different for every socket, is left out of the message.
func socketErr(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

func isClosedErr(err error) bool { return errors.Is(err, net.ErrClosed) }

// statusErrOf describes an unexpected CoAP response.
func statusErrOf(c codes.Code, payload []byte) error {
	diag := payload
	if len(diag) > 200 {
		diag = diag[:200]
	}
	return &StatusError{Code: coapCodeString(c), Diagnostic: strings.ToValidUTF8(string(diag), "")}
}
