package fetcher

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/udp"

	"erismount/eris"
)

func TestTransportsGet(t *testing.T) {
	small := randomBlocks(t, 3, eris.BlockSize1K)
	big := randomBlocks(t, 3, eris.BlockSize32K)
	store, refs := storeWith(t, append(small, big...)...)
	blocks := append(small, big...)
	missing := eris.RefOf([]byte("not stored"))
	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			_, urls := serve(t, store, ServerOptions{}, tr.listen)
			p := dial(t, urls[0], ClientOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for i, ref := range refs {
				got, err := p.GetBlock(ctx, ref)
				if err != nil {
					t.Fatalf("block %d (%d bytes): %v", i, len(blocks[i]), err)
				}
				if !bytes.Equal(got, blocks[i]) {
					t.Fatalf("block %d: got %d bytes that differ from the %d stored", i, len(got), len(blocks[i]))
				}
			}
			_, err := p.GetBlock(ctx, missing)
			if !errors.Is(err, eris.ErrNotFound) {
				t.Fatalf("missing block: got %v, want ErrNotFound", err)
			}
			var pe *PeerError
			if !errors.As(err, &pe) || pe.Peer != p.URL() || !strings.Contains(err.Error(), p.URL()) {
				t.Fatalf("missing block: error %q does not name peer %s", err, p.URL())
			}
		})
	}
}

func TestTransportsPut(t *testing.T) {
	good := append(randomBlocks(t, 2, eris.BlockSize1K), randomBlocks(t, 2, eris.BlockSize32K)...)
	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			store, _ := storeWith(t)
			srv, urls := serve(t, store, ServerOptions{AllowPut: true}, tr.listen)
			p := dial(t, urls[0], ClientOptions{})
			ctx := context.Background()
			for i, b := range good {
				ref := eris.RefOf(b)
				if err := p.PutBlock(ctx, ref, b); err != nil {
					t.Fatalf("put block %d (%d bytes): %v", i, len(b), err)
				}
				got, err := store.GetBlock(ctx, ref)
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("block %d not stored as sent: %v", i, err)
				}
			}
			before := store.Puts()
			bad := []struct {
				name  string
				ref   eris.Ref
				block []byte
				want  string
			}{
				{"wrong ref", eris.RefOf(good[1]), good[0], "does not match"},
				{"wrong ref 32K", eris.RefOf(good[0]), good[2], "does not match"},
				{"odd size", eris.RefOf(good[0][:1000]), good[0][:1000], "1024 or 32768"},
				{"too large", eris.RefOf(append(good[2], good[0]...)), append(append([]byte(nil), good[2]...), good[0]...), "at most 32768"},
			}
			for _, c := range bad {
				err := p.PutBlock(ctx, c.ref, c.block)
				t.Logf("%s: %v", c.name, err)
				var se *StatusError
				if !errors.As(err, &se) {
					t.Fatalf("%s: got %v, want a refusal", c.name, err)
				}
				if !strings.Contains(err.Error(), c.want) && c.name != "too large" {
					t.Errorf("%s: refusal %q does not say %q", c.name, err, c.want)
				}
			}
			if store.Puts() != before {
				t.Fatalf("refused uploads reached the store: %d puts", store.Puts()-before)
			}
			// The server's counters for metrics: every good block stored,
			// the bad ones that reached the checks refused, one get served.
			if _, err := p.GetBlock(ctx, eris.RefOf(good[0])); err != nil {
				t.Fatal(err)
			}
			st := srv.Stats()
			if st.Stored != uint64(len(good)) || st.Rejected < 3 || st.Blocks != 1 || st.Bytes != uint64(len(good[0])) || st.Errors != 0 {
				t.Errorf("server stats %+v", st)
			}
		})
	}
}

func TestPutReadOnly(t *testing.T) {
	b := randomBlocks(t, 1, eris.BlockSize1K)[0]
	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			store, _ := storeWith(t)
			_, urls := serve(t, store, ServerOptions{}, tr.listen)
			p := dial(t, urls[0], ClientOptions{})
			err := p.PutBlock(context.Background(), eris.RefOf(b), b)
			var se *StatusError
			if !errors.As(err, &se) || !(strings.HasPrefix(se.Code, "4.05") || strings.HasPrefix(se.Code, "405")) {
				t.Fatalf("put to read-only store: got %v, want 4.05 / 405", err)
			}
			if store.Len() != 0 {
				t.Fatal("read-only store was written")
			}
		})
	}
}

// TestHTTPPeerBadResponses: an HTTP peer that sends more than a block, a
// body cut short, or a server error is reported, never believed.
func TestHTTPPeerBadResponses(t *testing.T) {
	b := randomBlocks(t, 1, eris.BlockSize1K)[0]
	ref := eris.RefOf(b)
	cases := []struct {
		name    string
		handler http.HandlerFunc
		want    error
	}{
		{"too long", func(w http.ResponseWriter, _ *http.Request) { w.Write(bytes.Repeat(b, 40)) }, eris.ErrCorrupt},
		{"too long, chunked", func(w http.ResponseWriter, _ *http.Request) {
			w.Write(b)
			w.(http.Flusher).Flush()
			w.Write(bytes.Repeat(b, 40))
		}, eris.ErrCorrupt},
		{"cut short", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "1024")
			w.Write(b[:500])
		}, io.ErrUnexpectedEOF},
		{"wrong block", func(w http.ResponseWriter, _ *http.Request) { w.Write(b[:512]) }, eris.ErrCorrupt},
		{"server error", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "disk on fire", 500) }, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(c.handler)
			defer srv.Close()
			p := dial(t, srv.URL, ClientOptions{})
			_, err := p.GetBlock(context.Background(), ref)
			var pe *PeerError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a PeerError", err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want == nil && !strings.Contains(err.Error(), "500") {
				t.Fatalf("got %v, want the 500 named", err)
			}
		})
	}
}

// TestCoAPPeerBadResponses: a CoAP peer that sends an endless block-wise
// transfer, blocks out of order, more than 32 KiB at once or an error code
// is reported, never believed.
func TestCoAPPeerBadResponses(t *testing.T) {
	b := randomBlocks(t, 1, eris.BlockSize32K)[0]
	ref := eris.RefOf(b)
	block2 := func(w mux.ResponseWriter, r *mux.Message, shift int64, more bool) {
		num := int64(0)
		if v, err := r.GetOptionUint32(message.Block2); err == nil {
			_, num, _, _ = blockwise.DecodeBlockOption(v)
		}
		w.SetResponse(codes.Content, message.AppOctets, bytes.NewReader(b[:1024]))
		v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, num+shift, more)
		w.Message().SetOptionUint32(message.Block2, v)
	}
	cases := []struct {
		name    string
		network string
		handler mux.HandlerFunc
		want    error
		text    string
	}{
		{"endless", "udp", func(w mux.ResponseWriter, r *mux.Message) { block2(w, r, 0, true) }, eris.ErrCorrupt, "more than 32768"},
		{"out of order", "udp", func(w mux.ResponseWriter, r *mux.Message) { block2(w, r, 2, true) }, nil, "at offset"},
		{"too long at once", "tcp", func(w mux.ResponseWriter, r *mux.Message) {
			w.SetResponse(codes.Content, message.AppOctets, bytes.NewReader(bytes.Repeat(b[:1024], 40)))
		}, eris.ErrCorrupt, "response of 40960 bytes"},
		{"server error", "udp", func(w mux.ResponseWriter, r *mux.Message) {
			w.SetResponse(codes.InternalServerError, message.TextPlain, strings.NewReader("disk on fire"))
		}, nil, "5.00"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := rogueCoAP(t, c.network, c.handler)
			p := dial(t, url, ClientOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := p.GetBlock(ctx, ref)
			var pe *PeerError
			if !errors.As(err, &pe) || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("got %v, want a PeerError (%v) saying %q", err, c.want, c.text)
			}
		})
	}
}

// rogueCoAP serves h on go-coap's own server (no fetcher code) and returns
// its store URL.
func rogueCoAP(t *testing.T, network string, h mux.Handler) string {
	t.Helper()
	tick := newPeriodic(time.Second)
	done := make(chan struct{})
	if network == "udp" {
		l, err := coapnet.NewListenUDP("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := udp.NewServer(options.WithMux(h), options.WithErrors(func(error) {}), options.WithPeriodicRunner(tick.add),
			options.WithBlockwise(false, blockwise.SZX1024, time.Second))
		go func() { defer close(done); srv.Serve(l) }()
		t.Cleanup(func() { srv.Stop(); <-done; tick.stop() })
		return "coap://" + l.LocalAddr().String()
	}
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := tcp.NewServer(options.WithMux(h), options.WithErrors(func(error) {}), options.WithPeriodicRunner(tick.add),
		options.WithBlockwise(false, blockwise.SZX1024, time.Second))
	go func() { defer close(done); srv.Serve(&acceptListener{l: nl}) }()
	t.Cleanup(func() { srv.Stop(); <-done; tick.stop() })
	return "coap+tcp://" + nl.Addr().String()
}
