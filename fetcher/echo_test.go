package fetcher

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"erismount/eris"
)

func TestEchoValue(t *testing.T) {
	k, err := newEchoKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newEchoKey()
	a := netip.MustParseAddr("192.0.2.7")
	now := time.Unix(1_800_000_000, 0)
	v := k.value(a, now)
	if len(v) != echoLen {
		t.Fatalf("Echo value of %d bytes, want %d", len(v), echoLen)
	}
	tampered := bytes.Clone(v)
	tampered[len(tampered)-1] ^= 1
	for _, c := range []struct {
		name  string
		key   *echoKey
		v     []byte
		addr  netip.Addr
		now   time.Time
		valid bool
	}{
		{"fresh", &k, v, a, now, true},
		{"same address mapped to IPv6", &k, v, netip.AddrFrom16(a.As16()), now, true},
		{"at the end of its life", &k, v, a, now.Add(echoFresh), true},
		{"expired", &k, v, a, now.Add(echoFresh + time.Second), false},
		{"from the future", &k, v, a, now.Add(-2 * time.Second), false},
		{"other address", &k, v, netip.MustParseAddr("192.0.2.8"), now, false},
		{"other key", &other, v, a, now, false},
		{"tampered", &k, tampered, a, now, false},
		{"short", &k, v[:echoLen-1], a, now, false},
		{"empty", &k, nil, a, now, false},
	} {
		if got := c.key.valid(c.v, c.addr, c.now); got != c.valid {
			t.Errorf("%s: valid = %v, want %v", c.name, got, c.valid)
		}
	}
}

// udpListenerOf returns the UDP listener of a server.
func udpListenerOf(t *testing.T, srv *Server) *udpListener {
	t.Helper()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for l := range srv.listeners {
		if u, ok := l.(*udpListener); ok {
			return u
		}
	}
	t.Fatal("the server has no UDP listener")
	return nil
}

// rawExchange sends one datagram from c and returns the answer, if one
// comes within a second, and whether a second datagram followed it.
func rawExchange(t *testing.T, c *net.UDPConn, req []byte) (resp []byte, extra bool) {
	t.Helper()
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(time.Second))
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	resp = bytes.Clone(buf[:n])
	// Anything more would have been sent at once, with the first.
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = c.Read(buf)
	return resp, err == nil
}

func encodeCoAP(t *testing.T, m message.Message) []byte {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func decodeCoAP(t *testing.T, b []byte) message.Message {
	t.Helper()
	m := message.Message{Options: make(message.Options, 0, 32)}
	if _, err := coder.DefaultCoder.Decode(b, &m); err != nil {
		t.Fatalf("undecodable answer %x: %v", b, err)
	}
	return m
}

// TestUDPReflectionBounded sends block requests from plain UDP sockets, as
// a forger of source addresses would (who never sees the answers): each
// gets at most three times its size back, and the server keeps no state
// for such sources. Echoing the value the server sent then gets the full
// answer, from that socket and from another one of the same address.
func TestUDPReflectionBounded(t *testing.T) {
	big := randomBlocks(t, 1, eris.BlockSize32K)[0]
	store, refs := storeWith(t, big)
	srv, urls := serve(t, store, ServerOptions{}, "coap://127.0.0.1:0")
	ep, err := parseEndpoint(urls[0])
	if err != nil {
		t.Fatal(err)
	}
	sa, err := net.ResolveUDPAddr("udp", ep.addr)
	if err != nil {
		t.Fatal(err)
	}
	socket := func() *net.UDPConn {
		c, err := net.DialUDP("udp", nil, sa)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	get := func(token []byte, typ message.Type, block2 bool, echo []byte) message.Message {
		m := message.Message{Code: codes.GET, Type: typ, MessageID: int32(message.GetMID()), Token: token}
		for _, p := range strings.Split(strings.Trim(ep.blocksPath(), "/"), "/") {
			m.Options = append(m.Options, message.Option{ID: message.URIPath, Value: []byte(p)})
		}
		m.Options = append(m.Options, message.Option{ID: message.URIQuery, Value: []byte(refs[0].String())})
		if block2 {
			v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, 0, false)
			m.Options = append(m.Options, message.Option{ID: message.Block2, Value: []byte{byte(v)}})
		}
		if echo != nil {
			m.Options = append(m.Options, message.Option{ID: message.Echo, Value: echo})
		}
		return m
	}

	c := socket()
	var in, out int
	var echo []byte
	for _, tc := range []struct {
		name   string
		token  []byte
		typ    message.Type
		block2 bool
	}{
		{"CON no token", nil, message.Confirmable, false},
		{"CON 4-byte token", []byte{1, 2, 3, 4}, message.Confirmable, false},
		{"CON 8-byte token Block2", []byte{1, 2, 3, 4, 5, 6, 7, 8}, message.Confirmable, true},
		{"NON 8-byte token", []byte{8, 7, 6, 5, 4, 3, 2, 1}, message.NonConfirmable, false},
	} {
		req := encodeCoAP(t, get(tc.token, tc.typ, tc.block2, nil))
		resp, extra := rawExchange(t, c, req)
		if resp == nil || extra {
			t.Fatalf("%s: request of %d bytes: answer %x, more datagrams %v; want one 4.01", tc.name, len(req), resp, extra)
		}
		in, out = in+len(req), out+len(resp)
		ratio := float64(len(resp)) / float64(len(req))
		t.Logf("%s: %d bytes in, %d out (%.2fx)", tc.name, len(req), len(resp), ratio)
		if ratio > echoMaxRatio {
			t.Errorf("%s: %d bytes answered with %d: %.2fx, more than %dx", tc.name, len(req), len(resp), ratio, echoMaxRatio)
		}
		m := decodeCoAP(t, resp)
		e, err := m.Options.GetBytes(message.Echo)
		if m.Code != codes.Unauthorized || err != nil || !bytes.Equal(m.Token, tc.token) {
			t.Fatalf("%s: answer %v with Echo %x (%v), token %x; want 4.01 with an Echo and token %x", tc.name, m.Code, e, err, m.Token, tc.token)
		}
		echo = bytes.Clone(e)
	}
	// Datagrams that cannot be answered within the bound are not.
	for _, small := range [][]byte{
		encodeCoAP(t, message.Message{Code: codes.GET, Type: message.Confirmable, MessageID: 7}),
		encodeCoAP(t, message.Message{Code: codes.GET, Type: message.Confirmable, MessageID: 8, Token: []byte{1}}),
	} {
		if resp, _ := rawExchange(t, c, small); resp != nil {
			t.Errorf("a %d-byte request was answered with %d bytes", len(small), len(resp))
		}
		in += len(small)
	}
	// A ping gets a reset of its own size.
	ping := encodeCoAP(t, message.Message{Code: codes.Empty, Type: message.Confirmable, MessageID: 9})
	if resp, _ := rawExchange(t, c, ping); len(resp) != len(ping) || decodeCoAP(t, resp).Type != message.Reset {
		t.Errorf("ping: answer %x, want a reset", resp)
	}
	in, out = in+len(ping), out+len(ping)
	t.Logf("unverified source: %d bytes in, %d out (%.2fx)", in, out, float64(out)/float64(in))
	if out > echoMaxRatio*in {
		t.Errorf("unverified source: %d bytes in, %d out", in, out)
	}
	l := udpListenerOf(t, srv)
	l.mu.Lock()
	kept := len(l.clients)
	l.mu.Unlock()
	if kept != 0 {
		t.Errorf("the server keeps state for %d unverified sources", kept)
	}
	if st := srv.Stats(); st.Gets != 0 || st.EchoChallenges != 4 || st.EchoDropped != 2 {
		t.Errorf("stats %+v: want no store reads, 4 challenges and 2 dropped", st)
	}

	// A wrong Echo is challenged again.
	bad := bytes.Clone(echo)
	bad[5] ^= 1
	resp, _ := rawExchange(t, c, encodeCoAP(t, get([]byte{9}, message.Confirmable, false, bad)))
	if m := decodeCoAP(t, resp); m.Code != codes.Unauthorized {
		t.Fatalf("a tampered Echo: answer %v, want 4.01", m.Code)
	}
	// The Echo admits the address: full answers, on this socket and on
	// another one of the same address.
	for i, s := range []*net.UDPConn{c, socket()} {
		resp, _ = rawExchange(t, s, encodeCoAP(t, get([]byte{1, 2}, message.Confirmable, false, echo)))
		m := decodeCoAP(t, resp)
		if m.Code != codes.Content || !bytes.Equal(m.Payload, big[:eris.BlockSize1K]) {
			t.Fatalf("socket %d with the Echo: answer %v with %d bytes, want 2.05 with the first KiB", i, m.Code, len(m.Payload))
		}
		// Later requests of the verified socket need no Echo.
		resp, _ = rawExchange(t, s, encodeCoAP(t, get([]byte{3}, message.Confirmable, true, nil)))
		if m := decodeCoAP(t, resp); m.Code != codes.Content {
			t.Fatalf("socket %d, verified, without the Echo: answer %v, want 2.05", i, m.Code)
		}
	}
}

// TestClientEchoesOnce fetches blocks from a fresh UDP server with our
// client: it answers the server's one Echo challenge at once and sends the
// Echo value on its other sockets, so reads go through unchanged.
func TestClientEchoesOnce(t *testing.T) {
	noLeaks(t)
	blocks := append(randomBlocks(t, 20, eris.BlockSize1K), randomBlocks(t, 10, eris.BlockSize32K)...)
	store, refs := storeWith(t, blocks...)
	srv, urls := serve(t, store, ServerOptions{}, "coap://127.0.0.1:0")
	p := dial(t, urls[0], ClientOptions{Conns: 4})
	ctx := context.Background()
	for i, ref := range refs {
		b, err := p.GetBlock(ctx, ref)
		if err != nil || !bytes.Equal(b, blocks[i]) {
			t.Fatalf("block %d: %v", i, err)
		}
	}
	if n := srv.Stats().EchoChallenges; n != 1 {
		t.Errorf("reads one after another on 4 sockets met %d Echo challenges, want 1", n)
	}
	// Uploads pass the check too, and so do reads at once from a second
	// client.
	up, _ := storeWith(t)
	srv2, urls2 := serve(t, up, ServerOptions{AllowPut: true}, "coap://127.0.0.1:0")
	p2 := dial(t, urls2[0], ClientOptions{Conns: 4})
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Go(func() {
			if err := p2.PutBlock(ctx, ref, blocks[i]); err != nil {
				t.Errorf("put block %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	// Requests sent at once before the first challenge came back are each
	// challenged once; none after it.
	n := srv2.Stats().EchoChallenges
	if n == 0 || n > uint64(len(refs)) {
		t.Errorf("%d uploads at once met %d Echo challenges, want 1 to %d", len(refs), n, len(refs))
	}
	fetchAll(t, ctx, p2, refs, blocks, 16)
	if m := srv2.Stats().EchoChallenges; m != n {
		t.Errorf("reads after the uploads met %d more Echo challenges, want none", m-n)
	}
}

// TestInteropCoAPClientEcho gets a 32 KiB block with libcoap's client from
// a server that has never heard of its address: the client repeats its
// request with the server's Echo (RFC 9175) and gets the block.
func TestInteropCoAPClientEcho(t *testing.T) {
	bin := coapClient(t)
	big := randomBlocks(t, 1, eris.BlockSize32K)[0]
	store, refs := storeWith(t, big)
	srv, urls := serve(t, store, ServerOptions{}, "coap://127.0.0.1:0")
	out := filepath.Join(t.TempDir(), "block")
	msg, err := runCoAPClient(t, bin, "-v", "7", "-m", "get", "-o", out, urls[0]+"/blocks?"+refs[0].String())
	if err != nil {
		t.Fatalf("coap-client-notls: %v\n%.3000s", err, msg)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("coap-client-notls got %d bytes (%v), not the block", len(got), err)
	}
	if !strings.Contains(msg, "c:4.01") || !strings.Contains(msg, "Echo:") {
		t.Errorf("no 4.01 with an Echo in coap-client-notls's debug output:\n%.3000s", msg)
	}
	if n := srv.Stats().EchoChallenges; n != 1 {
		t.Errorf("%d Echo challenges, want 1", n)
	}
}
