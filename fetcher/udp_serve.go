package fetcher

import (
	"cmp"
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"erismount/eris"
)

// The GET fast path of a UDP listener: a block request from a verified
// client is answered without go-coap's connection (a goroutine hand-off,
// a pooled message and a write per datagram): decoded with go-coap's
// coder in the read loop, answered there when the block is in the block
// cache (the parts after the first of a 32 KiB block), else by a worker
// that reads the store. The answers of one batch of datagrams go out in
// one sendmmsg. Everything else (PUT, discovery, odd options, malformed
// references) takes go-coap's path.

// blockGet is a GET of the blocks resource, as the fast path takes it.
type blockGet struct {
	ref    eris.Ref
	opt    uint32 // Block2, if hasOpt
	hasOpt bool
	typ    message.Type
	mid    int32
	token  [8]byte
	tokLen int
}

// parseBlockGet reports whether m is a plain GET of the blocks resource
// with a valid reference and only options the fast path knows.
func (l *udpListener) parseBlockGet(m *message.Message) (blockGet, bool) {
	var g blockGet
	if m.Code != codes.GET || (m.Type != message.Confirmable && m.Type != message.NonConfirmable) || len(m.Token) > 8 {
		return g, false
	}
	seg := 0
	var query []byte
	queries := 0
	for _, o := range m.Options {
		switch o.ID {
		case message.URIPath:
			if seg >= len(l.segs) || string(o.Value) != l.segs[seg] {
				return g, false
			}
			seg++
		case message.URIQuery:
			queries++
			query = o.Value
		case message.Block2:
			v, _, err := message.DecodeUint32(o.Value)
			if err != nil {
				return g, false
			}
			g.opt, g.hasOpt = v, true
		case message.Echo, message.Size2:
		default:
			return g, false
		}
	}
	if seg != len(l.segs) || queries != 1 {
		return g, false
	}
	ref, err := parseRefQuery(string(query), true)
	if err != nil {
		return g, false
	}
	g.ref, g.typ, g.mid = ref, m.Type, m.MessageID
	g.tokLen = copy(g.token[:], m.Token)
	return g, true
}

// answer builds the response to g from block b (nil: rep says why not)
// and encodes it into buf (grown if need be). sent is how many block bytes
// it carries.
func (l *udpListener) answer(g *blockGet, b []byte, cached bool, rep reply, buf []byte) (out []byte, sent int, err error) {
	c := l.handler
	resp := message.Message{Token: g.token[:g.tokLen], Type: message.Acknowledgement, MessageID: g.mid}
	if g.typ == message.NonConfirmable {
		resp.Type, resp.MessageID = message.NonConfirmable, int32(message.GetMID())
	}
	var ob [16]byte
	opts := make(message.Options, 0, 4)
	if b == nil {
		resp.Code = coapCodes[rep.res]
		opts, _, err = opts.SetContentFormat(ob[:], message.TextPlain)
		resp.Payload = []byte(rep.diag)
		if rep.res == resInternal {
			l.s.log.Warn("coap: store error", "why", rep.diag)
		}
	} else {
		sl, serr := sliceBlock2(len(b), g.opt, g.hasOpt, true)
		if serr != nil {
			resp.Code = codes.BadOption
			opts, _, err = opts.SetContentFormat(ob[:], message.TextPlain)
			resp.Payload = []byte(serr.Error())
		} else {
			if sl.more && !cached && c.recent != nil {
				c.recent.Add(g.ref, b) // the next requests of this transfer want it
			}
			sent = sl.end - sl.off
			resp.Code = codes.Content
			resp.Payload = b[sl.off:sl.end]
			used := 0
			var n int
			opts, n, err = opts.SetContentFormat(ob[used:], message.AppOctets)
			used += n
			if err == nil && sl.blockwise {
				var v uint32
				if v, err = blockwise.EncodeBlockOption(sl.szx, sl.num, sl.more); err == nil {
					opts, n, err = opts.SetUint32(ob[used:], message.Block2, v)
					used += n
					if err == nil {
						opts, _, err = opts.SetUint32(ob[used:], message.Size2, uint32(len(b)))
					}
				}
			}
		}
	}
	if err != nil {
		return nil, 0, err
	}
	resp.Options = opts
	if buf == nil {
		buf = make([]byte, 0, 64+len(resp.Payload))
	}
	out, err = encodeCoAPMessage(resp, buf)
	return out, sent, err
}

// getJob is a block GET for a worker of the fast path.
type getJob struct {
	g  blockGet
	ap netip.AddrPort
	cm *coapnet.ControlMessage
}

// serveGet answers g from a worker: the store read may block. The
// workers are started as needed, up to ServerOptions.Workers, and kept
// until the listener stops (a goroutine per request, its stack grown
// anew each time, cost a tenth of a 1 KiB block); when all are busy the
// read loop waits for one.
func (l *udpListener) serveGet(g blockGet, ap netip.AddrPort, cm *coapnet.ControlMessage) {
	job := getJob{g, ap, cm}
	select {
	case l.jobs <- job: // an idle worker
		return
	default:
	}
	if l.getWorkers.Add(1) <= int64(l.s.opts.Workers) {
		l.wg.Add(1) // the read loop, our caller, holds wg above zero
		go l.getWorker(job)
		return
	}
	l.getWorkers.Add(-1)
	select {
	case l.jobs <- job:
	case <-l.ctx.Done():
	}
}

func (l *udpListener) getWorker(job getJob) {
	defer l.wg.Done()
	for {
		l.answerGet(job)
		select {
		case job = <-l.jobs:
		case <-l.ctx.Done():
			return
		}
	}
}

func (l *udpListener) answerGet(job getJob) {
	g, ap, cm := job.g, job.ap, job.cm
	ctx := l.storeCtx()
	b, cached := l.handler.recent.Get(g.ref)
	var rep reply
	if !cached {
		if rep = l.s.getBlock(ctx, g.ref); rep.res == resOK {
			b = rep.block
		}
	}
	out, sent, err := l.answer(&g, b, cached, rep, nil)
	if err == nil && sent > 0 {
		// The server's upload cap (ServerOptions.MaxUploadRate).
		if werr := l.s.upload.wait(ctx, sent); werr != nil {
			out, sent, err = l.answer(&g, nil, false, reply{res: resUnavailable, diag: "over the upload rate limit: no turn in time"}, nil)
		}
		l.s.stats.sent.Add(uint64(sent))
	}
	switch {
	case err == nil && l.batch != nil:
		l.sendCombined(ap, out)
		return
	case err == nil:
		err = l.write(ap, cm, out)
	}
	if err != nil {
		l.s.log.Debug("coap udp: cannot answer", "to", ap, "err", err)
	}
}

// storeCtx bounds a store read of the fast path: a context with a
// deadline shared by the reads that start within an eighth of
// StoreTimeout, so each read gets between 7/8 and all of it, without a
// timer of its own.
func (l *udpListener) storeCtx() context.Context {
	now := time.Now()
	if d := l.deadline.Load(); d != nil && now.Before(d.renew) {
		return d.ctx
	}
	timeout := l.s.opts.StoreTimeout
	ctx, cancel := context.WithTimeout(l.ctx, timeout)
	l.deadline.Store(&sharedDeadline{ctx: ctx, cancel: cancel, renew: now.Add(timeout / 8)})
	return ctx
}

// sharedDeadline is a store deadline several reads share; its context
// ends by itself at the deadline (cancel is kept for vet's sake).
type sharedDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc
	renew  time.Time
}

// sendCombined sends an answer a worker made: the worker that finds
// nobody writing writes the answers the others add meanwhile too, in
// batches (flat combining, as udpPeer.send).
func (l *udpListener) sendCombined(ap netip.AddrPort, b []byte) {
	l.outMu.Lock()
	l.outPending.bufs = append(l.outPending.bufs, b)
	l.outPending.addrs = append(l.outPending.addrs, ap)
	l.outPending.cms = append(l.outPending.cms, nil)
	if l.outBusy {
		l.outMu.Unlock()
		return
	}
	l.outBusy = true
	if l.wmsgs == nil {
		l.wmsgs = make([]ipMessage, 0, udpBatch)
	}
	wmsgs := l.wmsgs
	for len(l.outPending.bufs) > 0 {
		out := l.outPending
		l.outPending, l.outSpare = l.outSpare, serverOut{}
		l.outMu.Unlock()
		l.flush(l.batch, &out, wmsgs)
		out.reset()
		l.outMu.Lock()
		l.outSpare = out
	}
	l.outBusy = false
	l.outMu.Unlock()
}

// write sends one datagram to ap, from the address cm names when the
// listener is bound to a wildcard address.
func (l *udpListener) write(ap netip.AddrPort, cm *coapnet.ControlMessage, b []byte) error {
	if l.wild && cm != nil {
		reply := &coapnet.ControlMessage{IfIndex: cm.IfIndex}
		if !cm.Dst.IsMulticast() {
			reply.Src = cm.Dst
		}
		return l.conn.WriteWithOptions(b, coapnet.WithRemoteAddr(net.UDPAddrFromAddrPort(ap)), coapnet.WithControlMessage(reply))
	}
	_, err := l.raw.WriteToUDPAddrPort(b, ap)
	return err
}

// fast tries the fast path for a datagram from the verified client ap.
// It reports false when go-coap's connection should handle it. An answer
// made at once is appended to out.
func (l *udpListener) fast(ap netip.AddrPort, cm *coapnet.ControlMessage, dgram []byte, m *message.Message, out *serverOut) bool {
	if cap(m.Options) < 16 {
		m.Options = make(message.Options, 0, 16)
	}
	m.Options = m.Options[:0]
	if _, err := coder.DefaultCoder.Decode(dgram, m); err != nil {
		return false
	}
	g, ok := l.parseBlockGet(m)
	if !ok {
		return false
	}
	b, cached := l.handler.recent.Get(g.ref)
	if !cached || l.s.upload != nil {
		// A store read, or a wait for the upload cap: not in the read loop.
		l.serveGet(g, ap, cm)
		return true
	}
	buf, sent, err := l.answer(&g, b, true, reply{}, out.buf())
	if err != nil {
		return false
	}
	l.s.stats.sent.Add(uint64(sent))
	out.add(ap, cm, buf)
	return true
}

// serverOut collects the answers of one batch of datagrams.
type serverOut struct {
	order  []int
	sorted [][]byte
	slab   [][]byte
	n      int
	bufs   [][]byte
	addrs  []netip.AddrPort
	cms    []*coapnet.ControlMessage
}

// buf returns an empty buffer for the next answer.
func (o *serverOut) buf() []byte {
	if o.n == len(o.slab) {
		o.slab = append(o.slab, make([]byte, 0, udpSmallBuf))
	}
	b := o.slab[o.n][:0]
	return b
}

func (o *serverOut) add(ap netip.AddrPort, cm *coapnet.ControlMessage, b []byte) {
	if o.n < len(o.slab) && cap(b) == cap(o.slab[o.n]) {
		o.slab[o.n] = b[:0]
		o.n++
	}
	o.bufs = append(o.bufs, b)
	o.addrs = append(o.addrs, ap)
	o.cms = append(o.cms, cm)
}

func (o *serverOut) reset() {
	o.n = 0
	clear(o.bufs)
	clear(o.cms)
	o.bufs, o.addrs, o.cms = o.bufs[:0], o.addrs[:0], o.cms[:0]
}

// flush sends the answers collected from one batch of datagrams: those of
// one size to one client as one buffer with UDP_SEGMENT (GSO) where the
// kernel can, the rest as they are, all in as few sendmmsg calls as
// possible.
func (l *udpListener) flush(bc batchConn, out *serverOut, wmsgs []ipMessage) {
	if len(out.bufs) == 0 {
		return
	}
	order := out.order[:0]
	for i := range out.bufs {
		order = append(order, i)
	}
	gso := gsoSupported && !l.noGSO.Load() && len(order) > 1
	if gso {
		slices.SortStableFunc(order, func(a, b int) int {
			if c := out.addrs[a].Compare(out.addrs[b]); c != 0 {
				return c
			}
			return cmp.Compare(len(out.bufs[a]), len(out.bufs[b]))
		})
	}
	sorted := out.sorted[:0]
	for _, i := range order {
		sorted = append(sorted, out.bufs[i])
	}
	wmsgs = wmsgs[:0]
	var retry [][]byte // buffers of a GSO send that failed
	var retryTo []netip.AddrPort
	send := func() {
		for len(wmsgs) > 0 {
			n, err := bc.WriteBatch(wmsgs, 0)
			n = max(n, 0) // -1 when the first one failed
			if err != nil && n < len(wmsgs) {
				m := wmsgs[n]
				if m.OOB != nil && gsoError(err) {
					// No GSO here after all: send them one by one.
					l.noGSO.Store(true)
					for _, b := range m.Buffers {
						retry = append(retry, b)
						retryTo = append(retryTo, m.Addr.(*net.UDPAddr).AddrPort())
					}
				} else {
					l.s.log.Debug("coap udp: cannot answer", "to", m.Addr, "err", err)
				}
				n++
			}
			wmsgs = wmsgs[n:]
		}
		wmsgs = wmsgs[:0]
	}
	for i := 0; i < len(order); {
		ap, size := out.addrs[order[i]], len(sorted[i])
		j := i + 1
		if gso {
			for j < len(order) && j-i < gsoMaxSegments && (j-i+1)*size <= gsoMaxBytes &&
				out.addrs[order[j]] == ap && len(sorted[j]) == size {
				j++
			}
		}
		m := ipMessage{Buffers: sorted[i:j:j], Addr: net.UDPAddrFromAddrPort(ap)}
		if j-i > 1 {
			m.OOB = l.gsoOOB(size)
		}
		wmsgs = append(wmsgs, m)
		if len(wmsgs) == cap(wmsgs) {
			send()
		}
		i = j
	}
	send()
	for i, b := range retry {
		if err := l.write(retryTo[i], nil, b); err != nil {
			l.s.log.Debug("coap udp: cannot answer", "to", retryTo[i], "err", err)
		}
	}
	clear(sorted)
	out.sorted, out.order = sorted[:0], order[:0]
}

// gsoOOB returns the UDP_SEGMENT control message for size, made once.
func (l *udpListener) gsoOOB(size int) []byte {
	if oob, ok := l.gsoCache.Load(size); ok {
		return oob.([]byte)
	}
	oob := gsoOOB(size)
	l.gsoCache.Store(size, oob)
	return oob
}

// Linux sends at most 64 segments (UDP_MAX_SEGMENTS) of at most 64 KiB
// in all in one GSO send.
const (
	gsoMaxSegments = 64
	gsoMaxBytes    = 65000
)
