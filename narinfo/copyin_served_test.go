package narinfo_test

import (
	"context"
	"path/filepath"
	"testing"

	"erismount/eris"
	"erismount/fetcher"
	"erismount/narinfo"
	"erismount/narinfo/nar/nartest"
)

// serve starts a block server over store on listen and returns a peer
// dialled to it; both stop when the test ends.
func serve(t *testing.T, store eris.BlockStore, listen string) fetcher.Peer {
	t.Helper()
	ctx := context.Background()
	srv := fetcher.NewServer(store, fetcher.ServerOptions{})
	t.Cleanup(func() { srv.Close() })
	url, err := srv.Listen(ctx, listen)
	if err != nil {
		t.Fatalf("listen %s: %v", listen, err)
	}
	peer, err := fetcher.Dial(ctx, url, fetcher.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	return peer
}

// TestCopyInERISServed is copy-in end to end over real sockets: the item's
// blocks are served by a block server (CoAP over a Unix socket, HTTP on
// loopback), the cache starts empty, and the copy lands in a scratch store;
// a server whose store corrupts blocks, and a narinfo whose NarHash was
// altered and re-signed, land nothing.
func TestCopyInERISServed(t *testing.T) {
	ctx := context.Background()
	src := nartest.Build(t, filepath.Join(t.TempDir(), "src"), nartest.Tree())
	p := publish(t, src)
	listens := map[string]string{
		"coap+unix": "coap+unix://" + filepath.Join(t.TempDir(), "blocks.sock"),
		"http":      "http://127.0.0.1:0",
	}
	for name, listen := range listens {
		t.Run(name, func(t *testing.T) {
			t.Run("lands", func(t *testing.T) {
				peer := serve(t, p.peer, listen)
				p.peer.ResetCounts()
				store := scratchStore(t)
				if err := narinfo.CopyInERIS(ctx, p.n, p.acl, emptyCache(peer), store, narinfo.CopyInOptions{}); err != nil {
					t.Fatal(err)
				}
				checkLanded(t, store, itemBase, p.sum)
				if p.peer.Gets() == 0 {
					t.Error("the server's store was never read")
				}
			})
			t.Run("corrupting server", func(t *testing.T) {
				liar := p.clonePeer(t)
				liar.Fault = func(ref eris.Ref, b []byte) ([]byte, error) { b[len(b)-1] ^= 1; return b, nil }
				peer := serve(t, liar, listen)
				store := scratchStore(t)
				err := narinfo.CopyInERIS(ctx, p.n, p.acl, emptyCache(peer), store, narinfo.CopyInOptions{})
				landsNothing(t, err, eris.ErrCorrupt, store)
			})
			t.Run("altered NarHash re-signed", func(t *testing.T) {
				peer := serve(t, p.peer, listen)
				bad := p.sum
				bad.Hash[31] ^= 0x80
				n := p.sign(t, bad, p.n.ERIS)
				store := scratchStore(t)
				err := narinfo.CopyInERIS(ctx, n, p.acl, emptyCache(peer), store, narinfo.CopyInOptions{})
				landsNothing(t, err, narinfo.ErrMismatch, store)
			})
		})
	}
}
