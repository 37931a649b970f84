package testenv

import (
	"context"
	"path/filepath"
	"testing"

	"erismount/eris"
	"erismount/fetcher"
)

// BlockServer is a block server over a store, listening on loopback (or a
// Unix socket in a temporary directory): a peer for tests.
type BlockServer struct {
	// URL is what clients dial (--peer).
	URL string
	srv *fetcher.Server
}

// ServeBlocks serves store over scheme — "coap" (UDP), "coap+tcp",
// "coap+unix" or "http" — on a port the kernel picks, until Close or the
// end of the test.
func ServeBlocks(t testing.TB, store eris.BlockStore, scheme string) *BlockServer {
	t.Helper()
	srv := fetcher.NewServer(store, fetcher.ServerOptions{Logger: Logger(t)})
	listen := scheme + "://127.0.0.1:0"
	if scheme == "coap+unix" {
		listen = scheme + "://" + filepath.Join(t.TempDir(), "eris.sock")
	}
	url, err := srv.Listen(context.Background(), listen)
	if err != nil {
		srv.Close()
		t.Fatalf("testenv: serve blocks on %s: %v", listen, err)
	}
	s := &BlockServer{URL: url, srv: srv}
	t.Cleanup(s.Close)
	return s
}

// Close stops serving at once, as a peer that dies does.
func (s *BlockServer) Close() { s.srv.Close() }

// Dial connects to the peer at url and closes the connection when the test
// ends.
func Dial(t testing.TB, url string) fetcher.Peer {
	t.Helper()
	p, err := fetcher.Dial(context.Background(), url, fetcher.ClientOptions{Logger: Logger(t)})
	if err != nil {
		t.Fatalf("testenv: dial %s: %v", url, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
