package fetcher

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

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

// swarmNode is a node of a swarm as the CLI wires it: a memory cache in
// front of a pool (the publisher, then its neighbours), served on CoAP
// over UDP through a Relay that fetches only the blocks it owns.
type swarmNode struct {
	id     NodeID
	pool   *Pool
	tiered *cache.Tiered
	srv    *Server
	url    string
}

func newSwarmNode(t *testing.T, pubURL string, owns func(*Pool) func(eris.Ref) bool) *swarmNode {
	t.Helper()
	n := &swarmNode{id: NewNodeID()}
	var peers []Peer
	if pubURL != "" {
		peers = append(peers, dial(t, pubURL, ClientOptions{}))
	}
	// No hedge to the publisher while an owner fetches, however slow the
	// machine: the counts below do not depend on its speed.
	n.pool = NewPool(peers, PoolOptions{Node: n.id, HedgeMax: time.Minute})
	mem := cache.NewMemory(1 << 20)
	n.tiered = cache.NewTiered(cache.TieredOptions{Memory: mem, Remote: n.pool})
	local := cache.NewTiered(cache.TieredOptions{Memory: mem})
	n.srv = NewReadOnlyServer(&Relay{Local: local, Remote: n.tiered, Owns: owns(n.pool)}, ServerOptions{Node: n.id})
	t.Cleanup(func() {
		n.srv.Close()
		n.tiered.Close()
		local.Close()
		n.pool.Close()
	})
	var err error
	if n.url, err = n.srv.Listen(context.Background(), "coap://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return n
}

// meet makes every node a neighbour of every other, as discovery does.
func meet(t *testing.T, nodes ...*swarmNode) {
	t.Helper()
	for _, n := range nodes {
		for _, m := range nodes {
			if m == n {
				continue
			}
			p, err := DialNeighbour(context.Background(), m.url, ClientOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !n.pool.AddNeighbour(p, m.id) {
				t.Fatalf("AddNeighbour refused %s", m.url)
			}
		}
	}
}

// TestRelayOwnedOnce: three nodes over a publisher. Asked by a client, a
// node that lacks a block fetches it only if it owns it (4.04 otherwise);
// then the three read every block at once, each through its own pool,
// and the publisher serves each block exactly once.
func TestRelayOwnedOnce(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	blocks := append(randomBlocks(t, 24, eris.BlockSize1K), randomBlocks(t, 24, eris.BlockSize32K)...)
	pubStore, refs := storeWith(t, blocks...)
	pub, pubURLs := serve(t, pubStore, ServerOptions{}, "coap://127.0.0.1:0")
	owns := func(pl *Pool) func(eris.Ref) bool { return pl.Owns }
	var nodes []*swarmNode
	for range 3 {
		nodes = append(nodes, newSwarmNode(t, pubURLs[0], owns))
	}
	meet(t, nodes...)

	// A client asks the first half of the blocks of every node.
	half := len(refs) / 2
	for _, n := range nodes {
		c := dial(t, n.url, ClientOptions{})
		for i, ref := range refs[:half] {
			b, err := c.GetBlock(ctx, ref)
			switch {
			case n.pool.Owns(ref) && (err != nil || !bytes.Equal(b, blocks[i])):
				t.Errorf("block %d from its owner: %v", i, err)
			case !n.pool.Owns(ref) && !errors.Is(err, eris.ErrNotFound):
				t.Errorf("block %d from a node that does not own it: %v, want not found", i, err)
			}
		}
	}
	if got := pub.Stats().Blocks; got != uint64(half) {
		t.Errorf("the publisher served %d blocks for %d asked, want each once", got, half)
	}

	// Every node reads every block, all at once.
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() { fetchAll(t, ctx, n.tiered, refs, blocks, 8) })
	}
	wg.Wait()
	if got := pub.Stats().Blocks; got != uint64(len(refs)) {
		t.Errorf("the publisher served %d blocks to three nodes reading %d, want each once", got, len(refs))
	}
	for i, n := range nodes {
		st := n.srv.Stats()
		t.Logf("node %d served %d of %d requests (%d not found)", i, st.Blocks, st.Gets, st.NotFound)
	}
}

// TestRelayNoLoop: two nodes that both believe they own every block (as
// nodes whose views of the swarm differ may) and relay for each other.
// A block neither holds is one relayed request and one held request, not
// a ping-pong between them; a block one of them holds is relayed by the
// other in one hop.
func TestRelayNoLoop(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	blocks := randomBlocks(t, 2, eris.BlockSize32K)
	_, refs := storeWith(t, blocks...)
	all := func(*Pool) func(eris.Ref) bool { return func(eris.Ref) bool { return true } }
	a, b := newSwarmNode(t, "", all), newSwarmNode(t, "", all)
	meet(t, a, b)
	c := dial(t, a.url, ClientOptions{})
	if _, err := c.GetBlock(ctx, refs[0]); !errors.Is(err, eris.ErrNotFound) {
		t.Fatalf("a block nobody holds: %v, want not found", err)
	}
	if ga, gb := a.srv.Stats().Gets, b.srv.Stats().Gets; ga != 1 || gb != 1 {
		t.Errorf("a block nobody holds: the nodes got %d and %d requests, want 1 each (no loop)", ga, gb)
	}
	if err := b.tiered.PutBlock(ctx, refs[1], blocks[1]); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetBlock(ctx, refs[1]); err != nil || !bytes.Equal(got, blocks[1]) {
		t.Fatalf("a block the other node holds: %v", err)
	}
	if ga, gb := a.srv.Stats().Gets, b.srv.Stats().Gets; ga != 2 || gb != 2 {
		t.Errorf("a block the other node holds: the nodes got %d and %d requests in all, want 2 each", ga, gb)
	}
	// The held resource never relays, whoever owns the block.
	h, err := DialNeighbour(ctx, a.url, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.GetBlock(NoRelay(ctx), refs[0]); !errors.Is(err, eris.ErrNotFound) {
		t.Fatalf("held resource, a block nobody holds: %v, want not found", err)
	}
	if gb := b.srv.Stats().Gets; gb != 2 {
		t.Errorf("a request to the held resource reached the other node (%d requests)", gb)
	}
}
