package fetcher

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"

	"erismount/eris"
)

// rawCoAP returns a go-coap connection to a CoAP URL, to send requests
// our client would never send.
func rawCoAP(t *testing.T, url string) (coapConn, endpoint) {
	t.Helper()
	ep, err := parseEndpoint(url)
	if err != nil {
		t.Fatal(err)
	}
	if ep.transport != transportUDP {
		opts := ClientOptions{}
		opts.fill(ep.transport)
		p := newCoAPPeer(ep, opts)
		t.Cleanup(func() { p.Close() })
		cc, err := p.conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return cc, ep
	}
	tick := newPeriodic(10 * time.Millisecond)
	cc, err := udp.Dial(ep.addr, options.WithErrors(func(error) {}), options.WithPeriodicRunner(tick.add),
		options.WithBlockwise(false, blockwise.SZX1024, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); <-cc.Done(); tick.stop() })
	// Have the server verify this socket's address (RFC 9175 Echo), so
	// that it answers the test's requests in full.
	var echo []byte
	for range 2 {
		req, err := cc.NewGetRequest(context.Background(), ep.blocksPath(), message.Option{ID: message.URIQuery, Value: []byte(eris.Ref{}.String())})
		if err != nil {
			t.Fatal(err)
		}
		if echo != nil {
			req.SetOptionBytes(message.Echo, echo)
		}
		resp, err := cc.Do(req)
		cc.ReleaseMessage(req)
		if err != nil {
			t.Fatal(err)
		}
		code := resp.Code()
		if e, err := resp.GetOptionBytes(message.Echo); err == nil {
			echo = bytes.Clone(e)
		}
		cc.ReleaseMessage(resp)
		if code == codes.NotFound {
			return cc, ep
		}
		if code != codes.Unauthorized || echo == nil {
			t.Fatalf("priming a raw UDP socket: got %v, want 4.01 with an Echo, then NotFound", code)
		}
	}
	t.Fatal("priming a raw UDP socket: the server did not take its Echo")
	return nil, ep
}

type coapCase struct {
	name   string
	method codes.Code
	path   string
	query  []string
	opts   map[message.OptionID]uint32
	body   []byte
	want   codes.Code
	// check looks at a successful response.
	check func(t *testing.T, resp *pool.Message)
}

func TestCoAPServerAnswers(t *testing.T) {
	big := randomBlocks(t, 1, eris.BlockSize32K)[0]
	store, refs := storeWith(t, big)
	ref := refs[0]
	b2 := func(szx blockwise.SZX, num int64) uint32 {
		v, _ := blockwise.EncodeBlockOption(szx, num, false)
		return v
	}
	b1 := func(szx blockwise.SZX, num int64, more bool) uint32 {
		v, _ := blockwise.EncodeBlockOption(szx, num, more)
		return v
	}
	cases := []coapCase{
		{name: "wrong path", method: codes.GET, path: "/.well-known/eris/nope", query: []string{ref.String()}, want: codes.NotFound},
		{name: "no query", method: codes.GET, want: codes.BadRequest},
		{name: "two queries", method: codes.GET, query: []string{ref.String(), ref.String()}, want: codes.BadRequest},
		{name: "bad base32", method: codes.GET, query: []string{strings.Repeat("1", 52)}, want: codes.BadRequest},
		{name: "DELETE", method: codes.DELETE, query: []string{ref.String()}, want: codes.MethodNotAllowed},
		{name: "raw 32-octet ref", method: codes.GET, query: []string{string(ref[:])}, want: codes.Content},
		{name: "lower-case ref", method: codes.GET, query: []string{strings.ToLower(ref.String())}, want: codes.Content},
		{name: "256-byte block 5", method: codes.GET, query: []string{ref.String()}, opts: map[message.OptionID]uint32{message.Block2: b2(blockwise.SZX256, 5)}, want: codes.Content,
			check: func(t *testing.T, resp *pool.Message) {
				body, _ := resp.ReadBody()
				v, _ := resp.GetOptionUint32(message.Block2)
				szx, num, more, _ := blockwise.DecodeBlockOption(v)
				if !bytes.Equal(body, big[1280:1536]) || szx != blockwise.SZX256 || num != 5 || !more {
					t.Errorf("got %d bytes, szx %d num %d more %v", len(body), szx, num, more)
				}
			}},
		{name: "last 1 KiB block", method: codes.GET, query: []string{ref.String()}, opts: map[message.OptionID]uint32{message.Block2: b2(blockwise.SZX1024, 31)}, want: codes.Content,
			check: func(t *testing.T, resp *pool.Message) {
				body, _ := resp.ReadBody()
				v, _ := resp.GetOptionUint32(message.Block2)
				_, num, more, _ := blockwise.DecodeBlockOption(v)
				if size, _ := resp.GetOptionUint32(message.Size2); !bytes.Equal(body, big[31*1024:]) || num != 31 || more || size != eris.BlockSize32K {
					t.Errorf("got %d bytes, num %d more %v size2 %d", len(body), num, more, size)
				}
			}},
		{name: "block beyond the end", method: codes.GET, query: []string{ref.String()}, opts: map[message.OptionID]uint32{message.Block2: b2(blockwise.SZX1024, 32)}, want: codes.BadOption},
		{name: "Block1 not from the start", method: codes.PUT, query: []string{ref.String()}, opts: map[message.OptionID]uint32{message.Block1: b1(blockwise.SZX1024, 3, true)}, body: big[3072:4096], want: codes.RequestEntityIncomplete},
		{name: "Size1 over 32 KiB", method: codes.PUT, query: []string{ref.String()}, opts: map[message.OptionID]uint32{message.Block1: b1(blockwise.SZX1024, 0, true), message.Size1: 40000}, body: big[:1024], want: codes.RequestEntityTooLarge,
			check: func(t *testing.T, resp *pool.Message) {
				if v, err := resp.GetOptionUint32(message.Size1); err != nil || v != eris.BlockSize32K {
					t.Errorf("4.13 without Size1 32768 (%d, %v)", v, err)
				}
			}},
		{name: "partial Block1 before the last", method: codes.PUT, query: []string{ref.String()}, opts: map[message.OptionID]uint32{message.Block1: b1(blockwise.SZX1024, 0, true)}, body: big[:1000], want: codes.BadRequest},
	}
	_, urls := serve(t, store, ServerOptions{AllowPut: true}, "coap://127.0.0.1:0", "coap+tcp://127.0.0.1:0")
	for i, url := range urls {
		cc, ep := rawCoAP(t, url)
		for _, c := range cases {
			t.Run([]string{"udp", "tcp"}[i]+"/"+c.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				path := c.path
				if path == "" {
					path = ep.blocksPath()
				}
				var opts message.Options
				for _, q := range c.query {
					opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
				}
				req, err := cc.NewGetRequest(ctx, path, opts...)
				if err != nil {
					t.Fatal(err)
				}
				defer cc.ReleaseMessage(req)
				req.SetCode(c.method)
				for id, v := range c.opts {
					req.SetOptionUint32(id, v)
				}
				if c.body != nil {
					req.SetBody(bytes.NewReader(c.body))
				}
				resp, err := cc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer cc.ReleaseMessage(resp)
				if resp.Code() != c.want {
					diag, _ := resp.ReadBody()
					t.Fatalf("got %v (%q), want %v", resp.Code(), diag, c.want)
				}
				if c.check != nil {
					c.check(t, resp)
				}
			})
		}
	}
	if store.Puts() != 1 { // the one of storeWith
		t.Fatalf("refused uploads reached the store")
	}
}

func TestHTTPServerAnswers(t *testing.T) {
	b := randomBlocks(t, 1, eris.BlockSize1K)[0]
	store, refs := storeWith(t, b)
	_, urls := serve(t, store, ServerOptions{AllowPut: true}, "http://127.0.0.1:0/pre")
	base := urls[0] + "/uri-res/N2R?urn:blake2b:"
	newB := randomBlocks(t, 1, eris.BlockSize1K)[0]
	cases := []struct {
		method, url string
		body        []byte
		want        int
		wantBody    []byte
	}{
		{"GET", base + refs[0].String(), nil, 200, b},
		{"GET", strings.Replace(base, "urn:blake2b:", "URN:BLAKE2B:", 1) + strings.ToLower(refs[0].String()), nil, 200, b},
		{"HEAD", base + refs[0].String(), nil, 200, nil},
		{"GET", base + eris.RefOf(nil).String(), nil, 404, nil},
		{"GET", urls[0] + "/uri-res/N2R?" + refs[0].String(), nil, 400, nil},
		{"GET", base + "XYZ", nil, 400, nil},
		{"GET", urls[0] + "/other?urn:blake2b:" + refs[0].String(), nil, 404, nil},
		{"DELETE", base + refs[0].String(), nil, 405, nil},
		{"POST", base + eris.RefOf(newB).String(), newB, 201, nil},
		{"PUT", base + refs[0].String(), newB, 400, nil},
		{"PUT", base + eris.RefOf(nil).String(), bytes.Repeat(newB, 33), 413, nil},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, c.url, bytes.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || (c.wantBody != nil && !bytes.Equal(body, c.wantBody)) {
			t.Errorf("%s %s: %d %q, want %d", c.method, c.url, resp.StatusCode, body[:min(len(body), 80)], c.want)
		}
		if c.method == "HEAD" && (resp.ContentLength != int64(len(b)) || len(body) != 0) {
			t.Errorf("HEAD: Content-Length %d, body %d bytes", resp.ContentLength, len(body))
		}
		if c.want == 405 && !strings.Contains(resp.Header.Get("Allow"), "PUT") {
			t.Errorf("405 without Allow listing PUT: %q", resp.Header.Get("Allow"))
		}
	}
	if got, err := store.GetBlock(context.Background(), eris.RefOf(newB)); err != nil || !bytes.Equal(got, newB) {
		t.Fatal("POSTed block not stored")
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestServerLifecycle(t *testing.T) {
	noLeaks(t)
	store, _ := storeWith(t)
	srv := NewServer(store, ServerOptions{})
	if _, err := srv.Listen(context.Background(), "https://127.0.0.1:0"); !errors.Is(err, ErrBadURL) {
		t.Fatalf("https listen: %v, want ErrBadURL", err)
	}
	// A listener stops when its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	u, err := srv.Listen(ctx, "coap+tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep, _ := parseEndpoint(u)
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", ep.addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting 5s after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A stale Unix socket file is replaced; a live one is not.
	sock := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	if _, err := srv.Listen(context.Background(), "coap+unix://"+sock); err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	if _, err := srv.Listen(context.Background(), "coap+unix://"+sock); err == nil {
		t.Fatal("a second listener took over a live socket")
	}
	for _, u := range []string{"coap://127.0.0.1:0", "http://127.0.0.1:0"} {
		if _, err := srv.Listen(context.Background(), u); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
	if _, err := srv.Listen(context.Background(), "coap://127.0.0.1:0"); !errors.Is(err, ErrClosed) {
		t.Fatalf("listen after Close: %v, want ErrClosed", err)
	}
}

// TestServerCloseWithStreamClients closes servers while clients still hold
// several connections each: over a Unix socket every client has the same
// (empty) address, by which go-coap tells its connections apart, and Close
// used to wait for all but one of them to be closed by their clients.
func TestServerCloseWithStreamClients(t *testing.T) {
	noLeaks(t)
	blocks := randomBlocks(t, 16, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	for _, listen := range []string{"unix", "coap+tcp://127.0.0.1:0"} {
		srv := NewServer(store, ServerOptions{})
		if listen == "unix" {
			listen = "coap+unix://" + t.TempDir() + "/eris.sock"
		}
		u, err := srv.Listen(context.Background(), listen)
		if err != nil {
			t.Fatal(err)
		}
		p := dial(t, u, ClientOptions{Conns: 4})
		fetchAll(t, context.Background(), p, refs, blocks, 8) // every connection used
		done := make(chan struct{})
		go func() { srv.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("%s: Server.Close waits for clients to close their connections", listen)
		}
		p.Close()
	}
}
