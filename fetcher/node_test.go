package fetcher

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"erismount/cache"
	"erismount/eris"
)

// TestReadOnlyServerServesWhatIsHeld serves a node's cache — a real
// SQLite store under a tiered store whose remote is a publisher — over
// every transport. Serving the local tiers answers what the node holds and
// 4.04 for the rest without asking the publisher; relaying (serving the
// tiered store itself) fetches from the publisher. Uploads are refused.
func TestReadOnlyServerServesWhatIsHeld(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	blocks := append(randomBlocks(t, 4, eris.BlockSize1K), randomBlocks(t, 4, eris.BlockSize32K)...)
	pubStore, refs := storeWith(t, blocks...)
	pub, pubURLs := serve(t, pubStore, ServerOptions{}, "coap://127.0.0.1:0")

	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			disk, err := cache.OpenSQLite(filepath.Join(t.TempDir(), "blocks.sqlite"), cache.SQLiteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer disk.Close()
			pool := NewPool([]Peer{dial(t, pubURLs[0], ClientOptions{})}, PoolOptions{})
			defer pool.Close()
			mem := cache.NewMemory(1 << 20)
			node := cache.NewTiered(cache.TieredOptions{Memory: mem, Disk: disk, Remote: pool})
			defer node.Close()
			local := cache.NewTiered(cache.TieredOptions{Memory: mem, Disk: disk})
			defer local.Close()
			// The node reads half the blocks (through its peers), and so holds them.
			held := len(refs) / 2
			for i := 0; i < len(refs); i += 2 {
				if _, err := node.GetBlock(ctx, refs[i]); err != nil {
					t.Fatal(err)
				}
			}
			if err := node.Flush(ctx); err != nil {
				t.Fatal(err)
			}

			gets0 := pub.Stats().Gets
			srv := NewReadOnlyServer(local, ServerOptions{AllowPut: true})
			defer srv.Close()
			listen := tr.listen
			if listen == "unix" {
				listen = "coap+unix://" + t.TempDir() + "/node.sock"
			}
			u, err := srv.Listen(ctx, listen)
			if err != nil {
				t.Fatal(err)
			}
			p := dial(t, u, ClientOptions{})
			served := 0
			for i, ref := range refs {
				b, err := p.GetBlock(ctx, ref)
				switch {
				case i%2 == 0 && (err != nil || !bytes.Equal(b, blocks[i])):
					t.Errorf("held block %d: %v", i, err)
				case i%2 == 1 && !errors.Is(err, eris.ErrNotFound):
					t.Errorf("block %d the node does not hold: %v, want not found", i, err)
				case err == nil:
					served++
				}
			}
			if served != held {
				t.Errorf("served %d blocks, want the %d held", served, held)
			}
			if n := pub.Stats().Gets - gets0; n != 0 {
				t.Errorf("serving the node's cache asked the publisher %d times", n)
			}
			if err := p.PutBlock(ctx, refs[1], blocks[1]); err == nil {
				t.Error("a read-only node stored an upload")
			}
			if _, err := local.GetBlock(ctx, refs[1]); !errors.Is(err, eris.ErrNotFound) {
				t.Errorf("after a refused upload the node holds the block (%v)", err)
			}

			// Relaying: the tiered store with its remote fetches the rest.
			relay := NewReadOnlyServer(node, ServerOptions{})
			defer relay.Close()
			listen = tr.listen
			if listen == "unix" {
				listen = "coap+unix://" + t.TempDir() + "/relay.sock"
			}
			ru, err := relay.Listen(ctx, listen)
			if err != nil {
				t.Fatal(err)
			}
			fetchAll(t, ctx, dial(t, ru, ClientOptions{}), refs, blocks, 4)
		})
	}
}
