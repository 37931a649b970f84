package fetcher

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"erismount/eris"
)

// TestAIMDWindow drives the window with answers and losses: it grows by
// one per answer in slow start and by about one per window above the
// threshold, halves on a loss, at most once per window's worth of
// requests, never below one nor above its maximum.
func TestAIMDWindow(t *testing.T) {
	w := newAIMDWindow(100)
	if w.cwnd != aimdInitial {
		t.Fatalf("initial window %v, want %d", w.cwnd, aimdInitial)
	}
	send := func(n int) []uint64 {
		var seqs []uint64
		for range n {
			seqs = append(seqs, w.sent())
		}
		return seqs
	}
	answer := func(n int) {
		for range n {
			w.release()
			w.success()
		}
	}
	send(32)
	if w.room() {
		t.Fatal("room beyond a full window")
	}
	answer(32)
	if w.cwnd != 64 {
		t.Fatalf("slow start: window %v after 32 answers from 32, want 64", w.cwnd)
	}
	// Losses of requests sent before the cut cut once.
	seqs := send(10)
	w.loss(seqs[0])
	w.loss(seqs[5])
	w.loss(seqs[9])
	if w.cwnd != 32 || w.cuts != 1 {
		t.Fatalf("three losses of one window: window %v after %d cuts, want 32 after 1", w.cwnd, w.cuts)
	}
	// A loss of a request sent after the cut cuts again.
	later := send(1)
	w.loss(later[0])
	if w.cwnd != 16 || w.cuts != 2 {
		t.Fatalf("a later loss: window %v after %d cuts, want 16 after 2", w.cwnd, w.cuts)
	}
	answer(11)
	// Congestion avoidance: a window's worth of answers adds about one.
	before := w.cwnd
	n := int(before)
	send(n)
	answer(n)
	if d := w.cwnd - before; d < 0.9 || d > 1.0 {
		t.Fatalf("congestion avoidance: %d answers at %v grew the window by %v, want about 1", n, before, d)
	}
	for range 20 {
		w.loss(send(1)[0])
		answer(1)
	}
	if w.cwnd < aimdMin || w.cwnd > 2 {
		t.Fatalf("after 20 losses the window is %v, want about %d", w.cwnd, aimdMin)
	}
	if !w.room() {
		t.Fatal("no room at the smallest window with nothing in flight")
	}
	big := newAIMDWindow(40)
	for range 1000 {
		big.sent()
		big.release()
		big.success()
	}
	if big.cwnd != 40 {
		t.Fatalf("window %v grew past its maximum 40", big.cwnd)
	}
}

// udpPeerOf returns the udpPeer behind a Peer that Dial made.
func udpPeerOf(t *testing.T, p Peer) *udpPeer {
	t.Helper()
	u, ok := p.(*udpPeer)
	if !ok {
		t.Fatalf("%T is not a CoAP/UDP peer", p)
	}
	return u
}

// TestUDPWindowShrinksUnderLoss fetches 32 KiB blocks through a proxy
// first without loss, then losing every third datagram the server sends,
// then without loss again: the window grows, is cut by the losses to at
// most half of what it had reached, and grows again once they stop.
func TestUDPWindowShrinksUnderLoss(t *testing.T) {
	noLeaks(t)
	blocks := randomBlocks(t, 24, eris.BlockSize32K)
	store, refs := storeWith(t, blocks...)
	_, urls := serve(t, store, ServerOptions{}, "coap://127.0.0.1:0")
	ep, _ := parseEndpoint(urls[0])
	var lossy atomic.Bool
	var n atomic.Int64
	proxy := startUDPProxy(t, ep.addr, func(toServer bool) bool {
		return !toServer && lossy.Load() && n.Add(1)%3 == 0
	})
	p := udpPeerOf(t, dial(t, "coap://"+proxy, ClientOptions{AckTimeout: 20 * time.Millisecond, MaxRetransmit: 10, BlockWindow: 32}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	phase := func(name string, lose bool, from, to int) aimdWindow {
		t.Helper()
		lossy.Store(lose)
		p.mu.Lock()
		p.win.resetRange()
		p.mu.Unlock()
		fetchAll(t, ctx, p, refs[from:to], blocks[from:to], 4)
		w := p.windowState()
		t.Logf("%s: window %.1f (from %.1f to %.1f), %d cuts, %d answers, %d retransmissions", name, w.cwnd, w.low, w.high, w.cuts, w.grows, p.retransmissions())
		return w
	}
	clean := phase("no loss", false, 0, 8)
	if clean.high <= aimdInitial {
		t.Fatalf("without loss the window never grew past %d (reached %.1f)", aimdInitial, clean.high)
	}
	lost := phase("a third lost", true, 8, 16)
	if lost.cuts == clean.cuts || p.retransmissions() == 0 {
		t.Fatalf("losses without cuts: %d cuts, %d retransmissions", lost.cuts-clean.cuts, p.retransmissions())
	}
	if lost.low > clean.high/2 {
		t.Fatalf("under loss the window fell only to %.1f from %.1f", lost.low, clean.high)
	}
	again := phase("no loss again", false, 16, 24)
	if again.high <= lost.cwnd {
		t.Fatalf("after the losses the window did not grow: %.1f, was %.1f", again.high, lost.cwnd)
	}
}

// TestUDPRetransmission sends one request to a socket that never answers:
// it goes out 1 + MaxRetransmit times, always the same datagram (message
// ID and token), and the error is a timeout.
func TestUDPRetransmission(t *testing.T) {
	noLeaks(t)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got [][]byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, bytes.Clone(buf[:n]))
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	p := udpPeerOf(t, dial(t, "coap://"+c.LocalAddr().String(), ClientOptions{AckTimeout: 5 * time.Millisecond, MaxRetransmit: 3}))
	_, err = p.GetBlock(context.Background(), eris.RefOf([]byte("x")))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a timeout", err)
	}
	p.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 4 {
		t.Fatalf("%d datagrams sent, want 4 (1 + MaxRetransmit 3)", len(got))
	}
	first := decodeCoAP(t, got[0])
	if first.Type != message.Confirmable || first.Code != codes.GET || len(first.Token) != udpTokenSize {
		t.Fatalf("request %v %v with a token of %d bytes, want a confirmable GET with 8", first.Type, first.Code, len(first.Token))
	}
	for i, g := range got[1:] {
		if !bytes.Equal(g, got[0]) {
			t.Errorf("retransmission %d differs from the request", i+1)
		}
	}
}

// TestUDPClientCancelAndClose starts many reads and cancels them, against
// a server that never answers and against a real one: nothing stays in
// flight or queued, later reads work, Close ends every goroutine, and a
// read after Close is ErrClosed.
func TestUDPClientCancelAndClose(t *testing.T) {
	noLeaks(t)
	blocks := randomBlocks(t, 16, eris.BlockSize32K)
	store, refs := storeWith(t, blocks...)
	_, urls := serve(t, store, ServerOptions{}, "coap://127.0.0.1:0")
	for _, c := range []struct{ name, url string }{{"silent", "coap://" + silentUDP(t)}, {"real", urls[0]}} {
		t.Run(c.name, func(t *testing.T) {
			p := udpPeerOf(t, dial(t, c.url, ClientOptions{MaxInFlight: 8}))
			var wg sync.WaitGroup
			var cancels []context.CancelFunc
			for i := range 64 {
				ctx, cancel := context.WithCancel(context.Background())
				cancels = append(cancels, cancel)
				wg.Go(func() {
					_, err := p.GetBlock(ctx, refs[i%len(refs)])
					if err != nil && !errors.Is(err, context.Canceled) {
						t.Errorf("read %d: %v, want a block or cancelled", i, err)
					}
				})
				if i%2 == 0 {
					cancel()
				}
			}
			for _, cancel := range cancels {
				cancel()
			}
			wg.Wait()
			p.mu.Lock()
			inFlight, tokens, queued := p.win.inflight, len(p.tokens), len(p.queue)
			p.mu.Unlock()
			if inFlight != 0 || tokens != 0 || queued != 0 {
				t.Fatalf("after the reads: %d in the window, %d tokens, %d queued; want none", inFlight, tokens, queued)
			}
			if c.name == "real" {
				fetchAll(t, context.Background(), p, refs, blocks, 8)
			}
			p.Close()
			if _, err := p.GetBlock(context.Background(), refs[0]); !errors.Is(err, ErrClosed) {
				t.Fatalf("read after Close: %v, want ErrClosed", err)
			}
		})
	}
}

// TestUDPClientSeparateResponse answers with an empty ACK first and the
// response later, as a confirmable message of its own (RFC 7252 §5.2.2):
// the client takes it, and acknowledges it.
func TestUDPClientSeparateResponse(t *testing.T) {
	noLeaks(t)
	block := randomBlocks(t, 1, eris.BlockSize1K)[0]
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	acked := make(chan uint16, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			req := decodeCoAP(t, buf[:n])
			if req.Code == codes.Empty {
				if req.Type == message.Acknowledgement {
					acked <- uint16(req.MessageID)
				}
				continue
			}
			ack := encodeCoAP(t, message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: req.MessageID})
			_, _ = c.WriteToUDPAddrPort(ack, from)
			resp := message.Message{Type: message.Confirmable, Code: codes.Content, MessageID: 4242, Token: req.Token, Payload: block}
			_, _ = c.WriteToUDPAddrPort(encodeCoAP(t, resp), from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	p := dial(t, "coap://"+c.LocalAddr().String(), ClientOptions{AckTimeout: time.Second})
	got, err := p.GetBlock(context.Background(), eris.RefOf(block))
	if err != nil || !bytes.Equal(got, block) {
		t.Fatalf("separate response: %v", err)
	}
	if mid := <-acked; mid != 4242 {
		t.Fatalf("the client acknowledged message %d, want 4242", mid)
	}
}

// FuzzUDPClientDatagram feeds datagrams to a peer with a GET in flight:
// whatever comes, the peer neither panics nor takes more than 32 KiB, and
// a transfer it ends has an error or a block that fits.
func FuzzUDPClientDatagram(f *testing.F) {
	tok := make([]byte, 8)
	binary.BigEndian.PutUint64(tok, 7)
	enc := func(m message.Message) []byte {
		buf := make([]byte, 2048)
		n, err := coder.DefaultCoder.Encode(m, buf)
		if err != nil {
			f.Fatal(err)
		}
		return buf[:n]
	}
	opt := func(id message.OptionID, v uint32) message.Option {
		b := make([]byte, 4)
		n, _ := message.EncodeUint32(b, v)
		return message.Option{ID: id, Value: b[:n]}
	}
	b2, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, 0, true)
	f.Add(enc(message.Message{Type: message.Acknowledgement, Code: codes.Content, MessageID: 1, Token: tok, Payload: make([]byte, 1024)}))
	f.Add(enc(message.Message{Type: message.Acknowledgement, Code: codes.Content, MessageID: 1, Token: tok, Payload: make([]byte, 1024),
		Options: message.Options{opt(message.Block2, b2), opt(message.Size2, 32768)}}))
	f.Add(enc(message.Message{Type: message.Acknowledgement, Code: codes.Unauthorized, MessageID: 1, Token: tok,
		Options: message.Options{{ID: message.Echo, Value: []byte("0123456789ab")}}}))
	f.Add(enc(message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: 1}))
	f.Add(enc(message.Message{Type: message.Confirmable, Code: codes.NotFound, MessageID: 9, Token: tok}))
	f.Fuzz(func(t *testing.T, dgram []byte) {
		ep, _ := parseEndpoint("coap://127.0.0.1:9")
		opts := ClientOptions{}
		opts.fill(ep.transport)
		p := newUDPPeer(ep, opts)
		s := &udpSock{mids: make(map[uint16]*udpExchange)}
		tr := &udpTransfer{sock: s, query: []byte("q"), done: make(chan struct{}), total: -1}
		p.mu.Lock()
		defer p.mu.Unlock()
		ex := &udpExchange{t: tr, sock: s, num: -1, token: 7, mid: 1, live: true}
		tr.live = append(tr.live, ex)
		p.tokens[7] = ex
		s.mids[1] = ex
		p.win.sent()
		var m message.Message
		var out sendList
		for range 3 { // the same datagram again, as a duplicate would
			p.handleLocked(s, dgram, &m, &out)
		}
		if len(tr.body) > eris.BlockSize32K {
			t.Fatalf("%d bytes taken", len(tr.body))
		}
		if tr.ended && tr.err == nil && int64(len(tr.body)) != tr.total && tr.total >= 0 {
			t.Fatalf("a block of %d bytes of the %d announced", len(tr.body), tr.total)
		}
	})
}

// FuzzUDPBlockGet feeds datagrams to the server's fast path: a request it
// takes is answered with at most 1 KiB of the block, in a message that
// decodes, with the request's token.
func FuzzUDPBlockGet(f *testing.F) {
	block := randomBlocks(f, 1, eris.BlockSize32K)[0]
	ref := eris.RefOf(block)
	get := func(typ message.Type, block2 int64, extra ...message.Option) []byte {
		m := message.Message{Code: codes.GET, Type: typ, MessageID: 3, Token: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
		for _, p := range []string{".well-known", "eris", "blocks"} {
			m.Options = append(m.Options, message.Option{ID: message.URIPath, Value: []byte(p)})
		}
		m.Options = append(m.Options, message.Option{ID: message.URIQuery, Value: []byte(ref.String())})
		if block2 >= 0 {
			v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, block2, false)
			b := make([]byte, 4)
			n, _ := message.EncodeUint32(b, v)
			m.Options = append(m.Options, message.Option{ID: message.Block2, Value: b[:n]})
		}
		m.Options = append(m.Options, extra...)
		buf := make([]byte, 512)
		n, err := coder.DefaultCoder.Encode(m, buf)
		if err != nil {
			f.Fatal(err)
		}
		return buf[:n]
	}
	f.Add(get(message.Confirmable, -1))
	f.Add(get(message.Confirmable, 5))
	f.Add(get(message.NonConfirmable, 31))
	f.Add(get(message.Confirmable, 40))
	f.Add(get(message.Confirmable, 1, message.Option{ID: message.Echo, Value: []byte("0123456789ab")}))
	store, _ := storeWith(f, block)
	srv := NewServer(store, ServerOptions{})
	f.Cleanup(func() { srv.Close() })
	ep, _ := parseEndpoint("coap://127.0.0.1:0")
	l := &udpListener{s: srv, handler: srv.newCoAPBlocks(ep), segs: []string{".well-known", "eris", "blocks"}}
	f.Fuzz(func(t *testing.T, dgram []byte) {
		var m message.Message
		m.Options = make(message.Options, 0, 16)
		if _, err := coder.DefaultCoder.Decode(dgram, &m); err != nil {
			return
		}
		g, ok := l.parseBlockGet(&m)
		if !ok {
			return
		}
		if g.ref != ref {
			return
		}
		out, _, err := l.answer(&g, block, false, reply{}, nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		resp := decodeCoAP(t, out)
		if len(resp.Payload) > eris.BlockSize1K || !bytes.Equal(resp.Token, m.Token) {
			t.Fatalf("answer of %d bytes with token %x to token %x", len(resp.Payload), resp.Token, m.Token)
		}
	})
}

// TestUDPClientRefused reads from a port nobody listens on: the ICMP
// port unreachable errors, reported on reads and on writes (several
// requests at once, so some go out in one batch), fail the reads with
// ECONNREFUSED instead of waiting for retransmissions to run out.
func TestUDPClientRefused(t *testing.T) {
	noLeaks(t)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	p := dial(t, "coap://"+addr, ClientOptions{AckTimeout: time.Hour})
	for round := range 3 {
		var wg sync.WaitGroup
		var refused atomic.Int64
		for i := range 16 {
			wg.Go(func() {
				_, err := p.GetBlock(context.Background(), eris.RefOf([]byte{byte(round), byte(i)}))
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("read %d: %v, want connection refused", i, err)
				}
				refused.Add(1)
			})
		}
		wg.Wait()
		if refused.Load() != 16 {
			t.Fatalf("round %d: %d of 16 reads refused", round, refused.Load())
		}
	}
}
