package fetcher

import (
	"context"
	"crypto/rand"
	"flag"
	"testing"

	"go.uber.org/goleak"

	"erismount/eris"
	"erismount/eris/eristest"
)

var long = flag.Bool("long", false, "run long fetcher tests (many blocks, heavy loss)")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// randomBlocks returns n blocks of the given size with random content.
func randomBlocks(t testing.TB, n, size int) [][]byte {
	t.Helper()
	bs := make([][]byte, n)
	for i := range bs {
		bs[i] = make([]byte, size)
		if _, err := rand.Read(bs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return bs
}

// storeWith returns an in-memory store holding blocks, and their refs.
func storeWith(t testing.TB, blocks ...[]byte) (*eristest.Store, []eris.Ref) {
	t.Helper()
	s := eristest.NewStore()
	refs := make([]eris.Ref, len(blocks))
	for i, b := range blocks {
		refs[i] = eris.RefOf(b)
		if err := s.PutBlock(context.Background(), refs[i], b); err != nil {
			t.Fatal(err)
		}
	}
	return s, refs
}

// serve starts a server over store listening on each URL (port 0, or a
// socket in a temporary directory for "unix") and returns the real URLs.
func serve(t testing.TB, store eris.BlockStore, opts ServerOptions, urls ...string) (*Server, []string) {
	t.Helper()
	srv := NewServer(store, opts)
	t.Cleanup(func() { srv.Close() })
	var out []string
	for _, u := range urls {
		if u == "unix" {
			u = "coap+unix://" + t.TempDir() + "/eris.sock"
		}
		got, err := srv.Listen(context.Background(), u)
		if err != nil {
			t.Fatalf("listen %s: %v", u, err)
		}
		out = append(out, got)
	}
	return srv, out
}

// dial returns a peer closed at the end of the test.
func dial(t testing.TB, url string, opts ClientOptions) Peer {
	t.Helper()
	p, err := Dial(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// allTransports are listen URLs for one server of each kind.
var allTransports = []struct{ name, listen string }{
	{"udp", "coap://127.0.0.1:0"},
	{"tcp", "coap+tcp://127.0.0.1:0"},
	{"unix", "unix"},
	{"http", "http://127.0.0.1:0"},
}
