package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Shape is the network path the benchmark puts between a client and a
// server on loopback: a round-trip time, split evenly between the two
// directions, and a rate each direction sends at (full duplex).
type Shape struct {
	RTT time.Duration
	// Rate is in bits per second; 0 means no cap.
	Rate float64
	// Queue is how many bytes a direction holds waiting to be sent before
	// it drops datagrams (UDP) or stops reading (TCP, which then slows the
	// sender through its own window); 0 means 8 MiB.
	Queue int64
}

// Header bytes counted against the rate besides each payload: IPv4 + UDP
// per datagram, IPv4 + TCP per segment of tcpMSS bytes.
const (
	udpOverhead = 28
	tcpOverhead = 40
	tcpMSS      = 1460
)

// link is one direction of a shaped path. Each item handed to it leaves
// once the items before it have been serialized at the rate, and arrives
// at the far end the one-way delay later, in order.
type link struct {
	delay time.Duration
	rate  float64 // bytes per second, 0: unlimited
	limit int64   // bytes queued at most

	mu     sync.Mutex
	cond   *sync.Cond
	free   time.Time // when the items queued so far have been sent
	queue  []item
	queued int64 // wire bytes not yet delivered
	closed bool
	done   chan struct{}

	bytes   atomic.Int64 // wire bytes delivered
	items   atomic.Int64
	dropped atomic.Int64
}

// item is one datagram or one piece of a TCP stream in transit.
type item struct {
	at      time.Time
	wire    int64
	deliver func()
}

func newLink(delay time.Duration, bitsPerSecond float64, limit int64) *link {
	l := &link{delay: delay, rate: bitsPerSecond / 8, limit: limit, done: make(chan struct{})}
	l.cond = sync.NewCond(&l.mu)
	go l.run()
	return l
}

// send queues an item of wire bytes; deliver runs at its arrival time on
// the link's goroutine. With wait, send blocks while the queue is full (a
// TCP sender's window); without, the item is dropped (a router's full
// buffer) and send reports false.
func (l *link) send(wire int64, wait bool, deliver func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for !l.closed && l.queued > 0 && l.queued+wire > l.limit {
		if !wait {
			l.dropped.Add(1)
			return false
		}
		l.cond.Wait()
	}
	if l.closed {
		return false
	}
	now := time.Now()
	start := l.free
	if start.Before(now) {
		start = now
	}
	if l.rate > 0 {
		start = start.Add(time.Duration(float64(wire) / l.rate * float64(time.Second)))
	}
	l.free = start
	l.queued += wire
	l.queue = append(l.queue, item{at: start.Add(l.delay), wire: wire, deliver: deliver})
	l.cond.Broadcast()
	return true
}

// run delivers the queued items at their arrival times.
func (l *link) run() {
	defer close(l.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		l.mu.Lock()
		for !l.closed && len(l.queue) == 0 {
			l.cond.Wait()
		}
		if l.closed {
			l.mu.Unlock()
			return
		}
		it := l.queue[0]
		l.mu.Unlock()
		if wait := time.Until(it.at); wait > 0 {
			timer.Reset(wait)
			<-timer.C
		}
		l.bytes.Add(it.wire)
		l.items.Add(1)
		it.deliver()
		l.mu.Lock()
		l.queue[0] = item{}
		l.queue = l.queue[1:]
		l.queued -= it.wire
		l.cond.Broadcast()
		l.mu.Unlock()
	}
}

// close stops the link; what is still queued is never delivered.
func (l *link) close() {
	l.mu.Lock()
	l.closed = true
	l.cond.Broadcast()
	l.mu.Unlock()
	<-l.done
}

// LinkStats count what crossed a shaped path.
type LinkStats struct {
	Up, Down           int64 // wire bytes delivered (headers included)
	UpItems, DownItems int64 // datagrams or stream pieces delivered
	Dropped            int64 // datagrams dropped at a full queue
}

// Proxy forwards UDP datagrams or TCP connections from its own loopback
// address to a server, through a shaped path.
type Proxy struct {
	// Addr is the host:port clients connect to instead of the server.
	Addr     string
	up, down *link
	close    func()
	wg       sync.WaitGroup
}

func newProxy(sh Shape) *Proxy {
	limit := sh.Queue
	if limit <= 0 {
		limit = 8 << 20
	}
	return &Proxy{
		up:   newLink(sh.RTT/2, sh.Rate, limit),
		down: newLink(sh.RTT-sh.RTT/2, sh.Rate, limit),
	}
}

// Stats returns the counters of the path so far.
func (p *Proxy) Stats() LinkStats {
	return LinkStats{
		Up: p.up.bytes.Load(), Down: p.down.bytes.Load(),
		UpItems: p.up.items.Load(), DownItems: p.down.items.Load(),
		Dropped: p.up.dropped.Load() + p.down.dropped.Load(),
	}
}

// Close stops forwarding and waits for the proxy's goroutines.
func (p *Proxy) Close() {
	p.close()
	p.up.close()
	p.down.close()
	p.wg.Wait()
}

// ShapeUDP starts a UDP proxy on 127.0.0.1 in front of the UDP server at
// target. Each client address gets its own socket towards the server, so
// the server sees one client per client, as without the proxy.
func ShapeUDP(target string, sh Shape) (*Proxy, error) {
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	setBuffers(ln)
	p := newProxy(sh)
	p.Addr = ln.LocalAddr().String()
	var (
		mu    sync.Mutex
		flows = make(map[netip.AddrPort]*net.UDPConn)
	)
	p.close = func() {
		ln.Close()
		mu.Lock()
		for _, c := range flows {
			c.Close()
		}
		mu.Unlock()
	}
	flow := func(from netip.AddrPort) (*net.UDPConn, error) {
		mu.Lock()
		defer mu.Unlock()
		if c := flows[from]; c != nil {
			return c, nil
		}
		c, err := net.DialUDP("udp", nil, ta)
		if err != nil {
			return nil, err
		}
		setBuffers(c)
		flows[from] = c
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue // ICMP errors and the like: UDP goes on
				}
				b := append([]byte(nil), buf[:n]...)
				p.down.send(int64(n+udpOverhead), false, func() { ln.WriteToUDPAddrPort(b, from) })
			}
		}()
		return c, nil
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, from, err := ln.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			c, err := flow(from)
			if err != nil {
				continue
			}
			b := append([]byte(nil), buf[:n]...)
			p.up.send(int64(n+udpOverhead), false, func() { c.Write(b) })
		}
	}()
	return p, nil
}

// setBuffers asks for socket buffers as large as the CoAP endpoints' (the
// kernel caps them at net.core.rmem_max and wmem_max), so that the proxy
// is not where datagrams are lost.
func setBuffers(c *net.UDPConn) {
	c.SetReadBuffer(4 << 20)
	c.SetWriteBuffer(4 << 20)
}

// ShapeTCP starts a TCP proxy on 127.0.0.1 in front of the TCP server at
// target. The proxy ends each connection's TCP on loopback, so the shaped
// path behaves like a TCP connection whose window is the queue: no slow
// start, no loss. That favours whoever streams over TCP.
func ShapeTCP(target string, sh Shape) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := newProxy(sh)
	p.Addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu    sync.Mutex
		conns = make(map[net.Conn]bool)
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	p.close = func() {
		cancel()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var d net.Dialer
			u, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			if !track(c) || !track(u) {
				c.Close()
				u.Close()
				continue
			}
			p.wg.Add(2)
			go func() { defer p.wg.Done(); p.pump(c, u, p.up) }()
			go func() { defer p.wg.Done(); p.pump(u, c, p.down) }()
		}
	}()
	return p, nil
}

// pump copies src to dst through l, then half-closes dst.
func (p *Proxy) pump(src, dst net.Conn, l *link) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			b := append([]byte(nil), buf[:n]...)
			segs := (int64(n) + tcpMSS - 1) / tcpMSS
			if !l.send(int64(n)+segs*tcpOverhead, true, func() { dst.Write(b) }) {
				return
			}
		}
		if err != nil {
			l.send(0, true, func() {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == io.EOF {
					cw.CloseWrite()
				} else {
					dst.Close()
				}
			})
			return
		}
	}
}
