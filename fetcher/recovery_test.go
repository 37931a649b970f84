package fetcher

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"erismount/eris"
)

// countingPeer counts the requests in flight to a peer and the most seen
// at once since the last reset.
type countingPeer struct {
	Peer
	inFlight, maxInFlight, calls atomic.Int64
}

func (c *countingPeer) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	c.calls.Add(1)
	n := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	for m := c.maxInFlight.Load(); n > m && !c.maxInFlight.CompareAndSwap(m, n); m = c.maxInFlight.Load() {
	}
	return c.Peer.GetBlock(ctx, ref)
}

func (c *countingPeer) reset() {
	c.maxInFlight.Store(0)
	c.calls.Store(0)
}

// TestPoolPeerRecoversAfterRestart kills the only peer until the pool
// holds it dead for the longest back-off (an hour: longer than the test
// could wait), restarts it on the same address, and reads again: the
// first demand read after the restart gets its block through a probe.
// While the peer is down, demand reads probe it at most one at a time,
// at most once each, and background reads never do.
func TestPoolPeerRecoversAfterRestart(t *testing.T) {
	noLeaks(t)
	blocks := append(randomBlocks(t, 40, eris.BlockSize1K), randomBlocks(t, 4, eris.BlockSize32K)...)
	store, refs := storeWith(t, blocks...)
	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := context.Background()
			srv, urls := serve(t, store, ServerOptions{}, tr.listen)
			peer := &countingPeer{Peer: dial(t, urls[0], ClientOptions{DialTimeout: time.Second, AckTimeout: 200 * time.Millisecond, MaxRetransmit: 1})}
			pl := NewPool([]Peer{peer}, PoolOptions{Backoff: time.Hour, MaxBackoff: time.Hour, ProbeInterval: time.Nanosecond, Retries: -1, AttemptTimeout: 5 * time.Second})
			defer pl.Close()
			next := 0
			read := func(ctx context.Context) error {
				i := next % len(refs)
				next++
				b, err := pl.GetBlock(ctx, refs[i])
				if err == nil && !bytes.Equal(b, blocks[i]) {
					t.Fatalf("block %d: wrong bytes", i)
				}
				return err
			}
			if err := read(ctx); err != nil {
				t.Fatalf("before the outage: %v", err)
			}

			// Kill the peer; read until the pool holds it dead.
			srv.Close()
			for statsOf(t, pl, peer.URL()).State != "dead" {
				if next > 100 {
					t.Fatalf("the peer is %s after %d failed reads", statsOf(t, pl, peer.URL()).State, next)
				}
				if err := read(ctx); err == nil {
					t.Fatal("a killed peer delivered a block")
				}
			}

			// Background reads never probe a peer in its back-off.
			peer.reset()
			for range 5 {
				if err := read(eris.Background(ctx)); !errors.Is(err, ErrNoPeers) {
					t.Fatalf("background read with the only peer dead: %v, want ErrNoPeers", err)
				}
			}
			if n := peer.calls.Load(); n != 0 {
				t.Fatalf("background reads asked the dead peer %d times", n)
			}

			// Demand reads at once while it is down: they probe it, one
			// probe in flight at a time, each read at most once.
			peer.reset()
			probes0 := statsOf(t, pl, peer.URL()).Probes
			const readers = 16
			var wg sync.WaitGroup
			for i := range readers {
				wg.Go(func() {
					if _, err := pl.GetBlock(ctx, refs[i]); err == nil {
						t.Error("a killed peer delivered a block")
					}
				})
			}
			wg.Wait()
			probes := statsOf(t, pl, peer.URL()).Probes - probes0
			if m := peer.maxInFlight.Load(); m != 1 {
				t.Errorf("%d probes in flight at once to a dead peer, want 1", m)
			}
			if calls := uint64(peer.calls.Load()); probes == 0 || probes > readers || calls != probes {
				t.Errorf("%d demand reads made %d probes and %d requests; want 1 to %d probes, every request one", readers, probes, calls, readers)
			}
			if st := statsOf(t, pl, peer.URL()).State; st != "dead" {
				t.Fatalf("the killed peer is %s after its probes failed", st)
			}

			// Restart it on the same address: the first demand read works,
			// through a probe.
			serve(t, store, ServerOptions{}, urls[0])
			before := statsOf(t, pl, peer.URL())
			if err := read(ctx); err != nil {
				t.Fatalf("first read after the restart: %v", err)
			}
			after := statsOf(t, pl, peer.URL())
			if after.Probes != before.Probes+1 || after.State != "live" {
				t.Fatalf("first read after the restart: %d probes (want 1), peer %s (want live)", after.Probes-before.Probes, after.State)
			}
			fetchAll(t, ctx, pl, refs, blocks, 8)
		})
	}
}

// TestPoolProbeInterval shows the back-off still protecting a dead peer:
// after a demand read probed it, further demand reads within the probe
// interval fail at once without asking it.
func TestPoolProbeInterval(t *testing.T) {
	blocks := randomBlocks(t, 10, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	p := newFake("down", store, 0)
	p.down.Store(true)
	pl := NewPool([]Peer{p}, PoolOptions{Backoff: time.Hour, ProbeInterval: time.Hour, Retries: -1})
	defer pl.Close()
	ctx := context.Background()
	for i := range 3 {
		if _, err := pl.GetBlock(ctx, refs[i]); err == nil {
			t.Fatal("a down peer delivered a block")
		}
	}
	if st := statsOf(t, pl, p.URL()); st.State != "dead" || st.Probes != 0 {
		t.Fatalf("after 3 failures the peer is %s with %d probes, want dead and none", st.State, st.Probes)
	}
	calls := p.calls.Load()
	for i := range 5 {
		if _, err := pl.GetBlock(ctx, refs[i]); !errors.Is(err, ErrNoPeers) {
			t.Fatalf("demand read %d within the probe interval: %v, want ErrNoPeers", i, err)
		}
	}
	if n := p.calls.Load() - calls; n != 0 {
		t.Fatalf("demand reads within the probe interval of the peer's death asked it %d times", n)
	}
}

// TestPoolDemandProbesWhenLivePeersLack has a live peer that lacks the
// blocks and the peer that holds them dead for an hour: a demand read that
// every live peer answers "not found" probes the dead peer and gets its
// block; a background read does not.
func TestPoolDemandProbesWhenLivePeersLack(t *testing.T) {
	noLeaks(t)
	blocks := randomBlocks(t, 8, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	empty, _ := storeWith(t)
	lacking := newFake("lacking", empty, 0)
	holder := newFake("holder", store, 0)
	holder.down.Store(true)
	pl := NewPool([]Peer{lacking, holder}, PoolOptions{Backoff: time.Hour, MaxBackoff: time.Hour, ProbeInterval: time.Nanosecond, Retries: -1})
	defer pl.Close()
	ctx := context.Background()
	for i := 0; statsOf(t, pl, holder.URL()).State != "dead"; i++ {
		if i > 20 {
			t.Fatal("the failing peer never became dead")
		}
		if _, err := pl.GetBlock(eris.Background(ctx), refs[i%len(refs)]); err == nil {
			t.Fatal("a block from nowhere")
		}
	}
	holder.down.Store(false)
	calls := holder.calls.Load()
	if _, err := pl.GetBlock(eris.Background(ctx), refs[0]); err == nil || holder.calls.Load() != calls {
		t.Fatalf("a background read probed the dead peer (err %v)", err)
	}
	b, err := pl.GetBlock(ctx, refs[1])
	if err != nil || !bytes.Equal(b, blocks[1]) {
		t.Fatalf("demand read with the holder dead: %v", err)
	}
	if st := statsOf(t, pl, holder.URL()); st.Probes != 1 || st.State != "live" {
		t.Fatalf("holder: %d probes, %s; want 1 and live", st.Probes, st.State)
	}
}
