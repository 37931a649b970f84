package fetcher

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"erismount/eris"
)

// noLeaks checks, after every other cleanup of the test, that the test
// left no goroutine behind.
func noLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// udpProxy relays datagrams between clients and a UDP server, dropping
// those for which drop returns true.
type udpProxy struct {
	front    *net.UDPConn
	target   *net.UDPAddr
	drop     func(toServer bool) bool
	delay    time.Duration // added to every datagram, each way
	mu       sync.Mutex
	upstream map[netip.AddrPort]*net.UDPConn
	wg       sync.WaitGroup
	dropped  atomic.Int64
	relayed  atomic.Int64
}

func startUDPProxy(t testing.TB, target string, drop func(toServer bool) bool) string {
	t.Helper()
	return startDelayProxy(t, target, drop, 0)
}

// startDelayProxy is startUDPProxy that also holds every datagram for
// delay, like a link with latency.
func startDelayProxy(t testing.TB, target string, drop func(toServer bool) bool, delay time.Duration) string {
	t.Helper()
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{front: front, target: ta, drop: drop, delay: delay, upstream: make(map[netip.AddrPort]*net.UDPConn)}
	p.wg.Add(1)
	go p.loop()
	t.Cleanup(func() {
		front.Close()
		p.mu.Lock()
		for _, u := range p.upstream {
			u.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
		if p.dropped.Load() > 0 {
			t.Logf("proxy relayed %d datagrams, dropped %d", p.relayed.Load(), p.dropped.Load())
		}
	})
	return front.LocalAddr().String()
}

func (p *udpProxy) loop() {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := p.front.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		up := p.upstream[from]
		if up == nil {
			up, err = net.DialUDP("udp", nil, p.target)
			if err != nil {
				p.mu.Unlock()
				continue
			}
			p.upstream[from] = up
			p.wg.Add(1)
			go p.back(up, from)
		}
		p.mu.Unlock()
		if p.drop(true) {
			p.dropped.Add(1)
			continue
		}
		p.relayed.Add(1)
		p.send(buf[:n], func(b []byte) { _, _ = up.Write(b) })
	}
}

// send passes a datagram on, after the proxy's delay.
func (p *udpProxy) send(b []byte, write func([]byte)) {
	if p.delay == 0 {
		write(b)
		return
	}
	b = append([]byte(nil), b...)
	p.wg.Add(1)
	time.AfterFunc(p.delay, func() { defer p.wg.Done(); write(b) })
}

func (p *udpProxy) back(up *net.UDPConn, to netip.AddrPort) {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		if p.drop(false) {
			p.dropped.Add(1)
			continue
		}
		p.relayed.Add(1)
		p.send(buf[:n], func(b []byte) { _, _ = p.front.WriteToUDPAddrPort(b, to) })
	}
}

// startClosingProxy relays TCP connections to target and closes each one
// after it has carried limit bytes towards the client.
func startClosingProxy(t *testing.T, target string, limit int64) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		open   = map[net.Conn]struct{}{}
		closed atomic.Int64
	)
	track := func(cs ...net.Conn) {
		mu.Lock()
		for _, c := range cs {
			open[c] = struct{}{}
		}
		mu.Unlock()
	}
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			track(c, up)
			wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
			wg.Go(func() {
				_, _ = io.CopyN(c, up, limit)
				closed.Add(1)
				c.Close()
				up.Close()
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String(), &closed
}

// silentUDP is a UDP socket that reads everything and answers nothing.
func silentUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().String()
}

func mixedBlocks(t *testing.T, small, big int) ([][]byte, []eris.Ref) {
	blocks := append(randomBlocks(t, small, eris.BlockSize1K), randomBlocks(t, big, eris.BlockSize32K)...)
	refs := make([]eris.Ref, len(blocks))
	for i, b := range blocks {
		refs[i] = eris.RefOf(b)
	}
	return blocks, refs
}

// TestFaultBitFlippingPeer: a real server whose store flips a bit in every
// block it serves is never believed; the blocks come from the honest one.
func TestFaultBitFlippingPeer(t *testing.T) {
	noLeaks(t)
	blocks, refs := mixedBlocks(t, 24, 8)
	liarStore, _ := storeWith(t, blocks...)
	liarStore.Fault = func(_ eris.Ref, b []byte) ([]byte, error) {
		b[7] ^= 1
		return b, nil
	}
	honestStore, _ := storeWith(t, blocks...)
	_, liar := serve(t, liarStore, ServerOptions{}, "coap://127.0.0.1:0")
	_, honest := serve(t, honestStore, ServerOptions{}, "coap+tcp://127.0.0.1:0")
	pl := NewPool([]Peer{dial(t, liar[0], ClientOptions{}), dial(t, honest[0], ClientOptions{})}, PoolOptions{})
	t.Cleanup(func() { pl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fetchAll(t, ctx, pl, refs, blocks, 8)
	st := statsOf(t, pl, liar[0])
	if st.Blocks != 0 {
		t.Fatalf("%d blocks accepted from the bit-flipping peer", st.Blocks)
	}
	t.Logf("bit-flipping peer: %d requests, %d corrupt, state %s", st.Requests, st.Corrupt, st.State)
}

// TestFaultSilentPeer: a peer that never answers is hedged around; alone,
// it gives the caller its deadline error in time.
func TestFaultSilentPeer(t *testing.T) {
	noLeaks(t)
	blocks, refs := mixedBlocks(t, 24, 8)
	store, _ := storeWith(t, blocks...)
	_, good := serve(t, store, ServerOptions{}, "coap://127.0.0.1:0")
	silentPeer := dial(t, "coap://"+silentUDP(t), ClientOptions{})
	silent := silentPeer.URL()
	pl := NewPool([]Peer{silentPeer, dial(t, good[0], ClientOptions{})}, PoolOptions{HedgeInitial: 20 * time.Millisecond})
	t.Cleanup(func() { pl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fetchAll(t, ctx, pl, refs, blocks, 8)
	st := statsOf(t, pl, silent)
	if st.Blocks != 0 || st.Timeouts == 0 {
		t.Fatalf("silent peer: %+v", st)
	}
	t.Logf("silent peer: %d requests, %d timeouts, state %s", st.Requests, st.Timeouts, st.State)

	alone := NewPool([]Peer{dial(t, silent, ClientOptions{})}, PoolOptions{})
	t.Cleanup(func() { alone.Close() })
	for range 4 {
		dctx, dcancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		t0 := time.Now()
		_, err := alone.GetBlock(dctx, refs[0])
		dcancel()
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrNoPeers) {
			t.Fatalf("silent peer alone: got %v, want the deadline error (or no live peer once it is dead)", err)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("GetBlock took %v with a 150ms deadline", d)
		}
	}
	if st := alone.Stats()[0]; st.State == "live" {
		t.Fatalf("a silent peer that timed out %d times is still live", st.Timeouts)
	}
}

// TestFaultLossyPeer: half of the datagrams the peer sends are lost on
// the way; retransmission (and the pool's retries) deliver every block.
func TestFaultLossyPeer(t *testing.T) {
	noLeaks(t)
	small, big := 32, 4
	if *long {
		small, big = 256, 32
	}
	blocks, refs := mixedBlocks(t, small, big)
	store, _ := storeWith(t, blocks...)
	_, urls := serve(t, store, ServerOptions{}, "coap://127.0.0.1:0")
	ep, _ := parseEndpoint(urls[0])
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	proxy := startUDPProxy(t, ep.addr, func(toServer bool) bool {
		if toServer {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		return rng.IntN(2) == 0
	})
	peer := dial(t, "coap://"+proxy, ClientOptions{AckTimeout: 10 * time.Millisecond, MaxRetransmit: 12})
	pl := NewPool([]Peer{peer}, PoolOptions{Retries: 5})
	t.Cleanup(func() { pl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	t0 := time.Now()
	fetchAll(t, ctx, pl, refs, blocks, 16)
	st := pl.Stats()[0]
	t.Logf("%d blocks through 50%% loss in %v: %d requests, %d errors", len(blocks), time.Since(t0), st.Requests, st.Errors)
}

// TestFaultClosingPeer: a peer that closes every connection after it has
// sent 256 KiB, in the middle of a message; the requests in flight on it
// fail, the client dials again, the pool asks again, and nothing is lost.
func TestFaultClosingPeer(t *testing.T) {
	noLeaks(t)
	blocks, refs := mixedBlocks(t, 48, 16)
	store, _ := storeWith(t, blocks...)
	_, urls := serve(t, store, ServerOptions{}, "coap+tcp://127.0.0.1:0")
	ep, _ := parseEndpoint(urls[0])
	proxy, closed := startClosingProxy(t, ep.addr, 256<<10)
	pl := NewPool([]Peer{dial(t, "coap+tcp://"+proxy, ClientOptions{})}, PoolOptions{})
	t.Cleanup(func() { pl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fetchAll(t, ctx, pl, refs, blocks, 8)
	if closed.Load() < 2 {
		t.Fatalf("the proxy closed only %d connections", closed.Load())
	}
	st := pl.Stats()[0]
	t.Logf("%d connections closed under the client; %d requests, %d errors, state %s", closed.Load(), st.Requests, st.Errors, st.State)
}

// TestLatencyLink: through a link with a 10 ms round trip, the parts of
// a block asked for at once (few blocks in flight) come back right.
func TestLatencyLink(t *testing.T) {
	noLeaks(t)
	blocks, refs := mixedBlocks(t, 4, 6)
	store, _ := storeWith(t, blocks...)
	_, urls := serve(t, store, ServerOptions{}, "coap://127.0.0.1:0")
	ep, _ := parseEndpoint(urls[0])
	proxy := startDelayProxy(t, ep.addr, func(bool) bool { return false }, 5*time.Millisecond)
	p := dial(t, "coap://"+proxy, ClientOptions{BlockWindow: 16})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	fetchAll(t, ctx, p, refs, blocks, 2)
	t.Logf("%d blocks (%d of 32 KiB) over a 10 ms round trip in %v", len(blocks), 6, time.Since(t0))
}
