package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"erismount/eris"
	"erismount/eris/eristest"
)

// fakePeer is an in-memory Peer with faults. Unlike the peers Dial
// returns it does not verify blocks, so the pool must.
type fakePeer struct {
	name  string
	store *eristest.Store
	delay time.Duration
	// down makes every request fail with a transport error; silent makes
	// every request hang until its context ends.
	down, silent atomic.Bool
	flip         bool // flip a bit of every block
	// after, when set, holds every request until it is closed (or the
	// request's context ends); called, when set, is closed at the first
	// request.
	after, called chan struct{}
	callOnce      sync.Once

	inFlight, maxInFlight, calls atomic.Int64
}

func (f *fakePeer) URL() string  { return "fake://" + f.name }
func (f *fakePeer) Close() error { return nil }
func (f *fakePeer) PutBlock(ctx context.Context, ref eris.Ref, b []byte) error {
	return f.store.PutBlock(ctx, ref, b)
}

func (f *fakePeer) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	f.calls.Add(1)
	if f.called != nil {
		f.callOnce.Do(func() { close(f.called) })
	}
	if f.after != nil {
		select {
		case <-f.after:
		case <-ctx.Done():
			return nil, peerErr(f.URL(), "get", ref, ctx.Err())
		}
	}
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxInFlight.Load()
		if n <= m || f.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if f.silent.Load() {
		<-ctx.Done()
		return nil, peerErr(f.URL(), "get", ref, ctx.Err())
	}
	if f.down.Load() {
		return nil, peerErr(f.URL(), "get", ref, errors.New("connection refused"))
	}
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, peerErr(f.URL(), "get", ref, ctx.Err())
	}
	b, err := f.store.GetBlock(ctx, ref)
	if err != nil {
		return nil, peerErr(f.URL(), "get", ref, err)
	}
	if f.flip {
		b[len(b)/2] ^= 0x10
	}
	return b, nil
}

func newFake(name string, store *eristest.Store, delay time.Duration) *fakePeer {
	return &fakePeer{name: name, store: store, delay: delay}
}

// fetchAll gets every ref through g, concurrently, and checks the bytes.
func fetchAll(t *testing.T, ctx context.Context, g eris.BlockGetter, refs []eris.Ref, blocks [][]byte, parallel int) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	errs := make(chan error, len(refs))
	for i, ref := range refs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			b, err := g.GetBlock(ctx, ref)
			switch {
			case err != nil:
				errs <- fmt.Errorf("block %d: %w", i, err)
			case !bytes.Equal(b, blocks[i]):
				errs <- fmt.Errorf("block %d: wrong bytes", i)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func statsOf(t *testing.T, pl *Pool, url string) PeerStats {
	t.Helper()
	for _, s := range pl.Stats() {
		if s.URL == url {
			return s
		}
	}
	t.Fatalf("no stats for %s", url)
	return PeerStats{}
}

func TestPoolCorruptPeerIsNeverUsed(t *testing.T) {
	blocks := append(randomBlocks(t, 20, eris.BlockSize1K), randomBlocks(t, 4, eris.BlockSize32K)...)
	store, refs := storeWith(t, blocks...)
	liar := newFake("liar", store, 0)
	liar.flip = true
	liar.called = make(chan struct{})
	// The pool tries untried peers in a random order: the honest peer
	// answers only once the liar has been asked (directly, or by a hedge),
	// so the liar is always put to the test, whatever the machine's speed.
	honest := newFake("honest", store, time.Millisecond)
	honest.after = liar.called
	pl := NewPool([]Peer{liar, honest}, PoolOptions{})
	defer pl.Close()
	fetchAll(t, context.Background(), pl, refs, blocks, 8)
	ls := statsOf(t, pl, liar.URL())
	if ls.Corrupt == 0 || ls.Blocks != 0 {
		t.Fatalf("liar: %d corrupt, %d blocks accepted; want some corrupt and none accepted", ls.Corrupt, ls.Blocks)
	}
	if ls.State != "dead" {
		t.Fatalf("liar is %s after sending corrupt blocks, want dead", ls.State)
	}
	if hs := statsOf(t, pl, honest.URL()); hs.Blocks != uint64(len(blocks)) {
		t.Fatalf("honest peer delivered %d blocks, want %d", hs.Blocks, len(blocks))
	}
}

func TestPoolHedgesSilentPeer(t *testing.T) {
	blocks := randomBlocks(t, 40, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	silent := newFake("silent", store, 0)
	silent.silent.Store(true)
	good := newFake("good", store, 5*time.Millisecond)
	pl := NewPool([]Peer{silent, good}, PoolOptions{HedgeInitial: 20 * time.Millisecond})
	defer pl.Close()
	t0 := time.Now()
	fetchAll(t, context.Background(), pl, refs, blocks, 4)
	ss := statsOf(t, pl, silent.URL())
	// After its first timeouts it ranks last (or is dead): it costs a few
	// hedge delays, not one per block.
	if ss.Requests > 20 || ss.Timeouts == 0 {
		t.Fatalf("silent peer was asked %d times for %d blocks", ss.Requests, len(blocks))
	}
	if gs := statsOf(t, pl, good.URL()); gs.Hedges == 0 {
		t.Fatal("no request was hedged to the good peer")
	}
	t.Logf("40 blocks in %v; silent peer: %d requests, %d timeouts, state %s", time.Since(t0), ss.Requests, ss.Timeouts, ss.State)
}

func TestPoolDeadlineWithOnlySilentPeer(t *testing.T) {
	store, refs := storeWith(t, randomBlocks(t, 1, eris.BlockSize1K)...)
	silent := newFake("silent", store, 0)
	silent.silent.Store(true)
	pl := NewPool([]Peer{silent}, PoolOptions{})
	defer pl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := pl.GetBlock(ctx, refs[0])
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline error", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("GetBlock returned %v after a 150ms deadline", d)
	}
}

func TestPoolDeadPeerFailsBack(t *testing.T) {
	blocks := randomBlocks(t, 10, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	p := newFake("flaky", store, 0)
	p.down.Store(true)
	pl := NewPool([]Peer{p}, PoolOptions{Backoff: 50 * time.Millisecond, Retries: -1})
	defer pl.Close()
	ctx := context.Background()
	for i := range 3 {
		if _, err := pl.GetBlock(ctx, refs[i]); err == nil {
			t.Fatal("a down peer delivered a block")
		}
	}
	if st := statsOf(t, pl, p.URL()).State; st != "dead" {
		t.Fatalf("after 3 failures the peer is %s, want dead", st)
	}
	calls := p.calls.Load()
	_, err := pl.GetBlock(eris.Background(ctx), refs[3])
	if !errors.Is(err, ErrNoPeers) || p.calls.Load() != calls {
		t.Fatalf("a background read asked a dead peer in its backoff (err %v)", err)
	}
	p.down.Store(false)
	time.Sleep(60 * time.Millisecond)
	fetchAll(t, ctx, pl, refs, blocks, 1) // the first request is the probe
	if st := statsOf(t, pl, p.URL()).State; st != "live" {
		t.Fatalf("recovered peer is %s, want live", st)
	}
}

func TestPoolNotFound(t *testing.T) {
	blocks := randomBlocks(t, 1, eris.BlockSize1K)
	full, refs := storeWith(t, blocks...)
	empty, _ := storeWith(t)
	missing := eris.RefOf([]byte("missing"))
	cases := []struct {
		name         string
		peers        func() []Peer
		ref          eris.Ref
		wantNotFound bool
	}{
		{"nobody has it", func() []Peer { return []Peer{newFake("a", empty, 0), newFake("b", full, 0)} }, missing, true},
		{"one has it", func() []Peer { return []Peer{newFake("a", empty, 0), newFake("b", full, time.Millisecond)} }, refs[0], false},
		{"one lacks it, one is down", func() []Peer {
			down := newFake("b", full, 0)
			down.down.Store(true)
			return []Peer{newFake("a", empty, 0), down}
		}, refs[0], false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pl := NewPool(c.peers(), PoolOptions{})
			defer pl.Close()
			b, err := pl.GetBlock(context.Background(), c.ref)
			if c.name == "one has it" {
				if err != nil || !bytes.Equal(b, blocks[0]) {
					t.Fatalf("got %v", err)
				}
				return
			}
			if errors.Is(err, eris.ErrNotFound) != c.wantNotFound {
				t.Fatalf("got %v; ErrNotFound wanted: %v", err, c.wantNotFound)
			}
		})
	}
}

func TestPoolWindowBoundsInFlight(t *testing.T) {
	blocks := randomBlocks(t, 64, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	p := newFake("slow", store, 5*time.Millisecond)
	pl := NewPool([]Peer{p}, PoolOptions{Window: 4})
	defer pl.Close()
	fetchAll(t, context.Background(), pl, refs, blocks, 32)
	if m := p.maxInFlight.Load(); m > 4 || m < 2 {
		t.Fatalf("%d requests in flight at most with a window of 4", m)
	}
}

func TestPoolStats(t *testing.T) {
	blocks := randomBlocks(t, 16, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	p := newFake("p", store, time.Millisecond)
	pl := NewPool([]Peer{p}, PoolOptions{})
	defer pl.Close()
	fetchAll(t, context.Background(), pl, refs, blocks, 4)
	s := pl.Stats()[0]
	var sum uint64
	for _, c := range s.Latency.Counts {
		sum += c
	}
	if s.Blocks != 16 || s.Bytes != 16*1024 || s.Requests != 16 || s.Latency.Count != 16 || sum != 16 || s.Latency.Sum <= 0 {
		t.Fatalf("stats do not add up: %+v", s)
	}
	if s.Estimate < time.Millisecond || s.HedgeAfter < time.Millisecond {
		t.Fatalf("latency estimate %v, hedge delay %v: below the peer's 1ms", s.Estimate, s.HedgeAfter)
	}
}

// gatePeer holds every request until release is closed, telling of each
// one on started as it arrives.
type gatePeer struct {
	store   *eristest.Store
	started chan eris.Ref
	release chan struct{}
}

func (g *gatePeer) URL() string  { return "fake://gate" }
func (g *gatePeer) Close() error { return nil }
func (g *gatePeer) PutBlock(ctx context.Context, ref eris.Ref, b []byte) error {
	return g.store.PutBlock(ctx, ref, b)
}

func (g *gatePeer) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	g.started <- ref
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, peerErr(g.URL(), "get", ref, ctx.Err())
	}
	return g.store.GetBlock(ctx, ref)
}

// TestPoolKeepsRoomForDemand: background requests (prefetching) take at
// most three quarters of a peer's window, so a read someone waits for is
// sent at once even when many background requests queue.
func TestPoolKeepsRoomForDemand(t *testing.T) {
	blocks := randomBlocks(t, 13, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	p := &gatePeer{store: store, started: make(chan eris.Ref, len(refs)), release: make(chan struct{})}
	pl := NewPool([]Peer{p}, PoolOptions{Window: 4})
	defer pl.Close()
	var released sync.Once
	release := func() { released.Do(func() { close(p.release) }) }
	defer release()

	bg := eris.Background(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, len(refs))
	for i, ref := range refs[:12] {
		wg.Go(func() {
			if b, err := pl.GetBlock(bg, ref); err != nil || !bytes.Equal(b, blocks[i]) {
				errs <- fmt.Errorf("background block %d: %v", i, err)
			}
		})
	}
	for range 3 {
		if ref := <-p.started; ref == refs[12] {
			t.Fatal("the demand block was asked for before it was read")
		}
	}
	// Nine background requests wait; the fourth slot is the demand read's.
	wg.Go(func() {
		if b, err := pl.GetBlock(context.Background(), refs[12]); err != nil || !bytes.Equal(b, blocks[12]) {
			errs <- fmt.Errorf("demand block: %v", err)
		}
	})
	if ref := <-p.started; ref != refs[12] {
		t.Errorf("a fourth background request (%s) went out before the demand read", ref.Str())
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestPoolAddPeer adds a peer at run time, as discovery does: the pool
// uses it (the first peer lacks the blocks), refuses a second peer of the
// same URL, and refuses any after Close.
func TestPoolAddPeer(t *testing.T) {
	blocks := randomBlocks(t, 8, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	empty, _ := storeWith(t)
	pl := NewPool([]Peer{newFake("empty", empty, 0)}, PoolOptions{})
	ctx := context.Background()
	if _, err := pl.GetBlock(ctx, refs[0]); !errors.Is(err, eris.ErrNotFound) {
		t.Fatalf("before the peer holding the blocks joined: %v, want not found", err)
	}
	full := newFake("full", store, 0)
	if !pl.AddPeer(full) {
		t.Fatal("AddPeer refused a new peer")
	}
	if pl.AddPeer(newFake("full", store, 0)) {
		t.Fatal("AddPeer took a second peer of the same URL")
	}
	fetchAll(t, ctx, pl, refs, blocks, 4)
	if st := statsOf(t, pl, full.URL()); st.Blocks != uint64(len(refs)) {
		t.Fatalf("the added peer delivered %d blocks, want %d", st.Blocks, len(refs))
	}
	pl.Close()
	if pl.AddPeer(newFake("late", store, 0)) {
		t.Fatal("AddPeer took a peer after Close")
	}
}

// TestPoolNoPeersSaysWhy: a read while the only peer is dead for a
// corrupt block fails with ErrNoPeers and with the cause, so the CLI says
// "verification failed" (exit 4) whichever read failed first.
func TestPoolNoPeersSaysWhy(t *testing.T) {
	blocks := randomBlocks(t, 2, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	liar := newFake("liar", store, 0)
	liar.flip = true
	pl := NewPool([]Peer{liar}, PoolOptions{Backoff: time.Hour, MaxBackoff: time.Hour, ProbeInterval: time.Hour})
	defer pl.Close()
	if _, err := pl.GetBlock(context.Background(), refs[0]); !errors.Is(err, eris.ErrCorrupt) {
		t.Fatalf("first read: %v, want ErrCorrupt", err)
	}
	_, err := pl.GetBlock(context.Background(), refs[1])
	if !errors.Is(err, ErrNoPeers) || !errors.Is(err, eris.ErrCorrupt) {
		t.Fatalf("read with the liar dead: %v, want ErrNoPeers and ErrCorrupt", err)
	}
}

// askLog records which peer a pool asked, in order, and whether the
// request could be relayed.
type askLog struct {
	mu   sync.Mutex
	asks []string
}

func (l *askLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.asks
	l.asks = nil
	return a
}

// loggedPeer is a fakePeer that writes each request to a log: its name,
// with " held" when the request was marked NoRelay.
type loggedPeer struct {
	*fakePeer
	log *askLog
}

func (p *loggedPeer) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	name := p.name
	if IsNoRelay(ctx) {
		name += " held"
	}
	p.log.mu.Lock()
	p.log.asks = append(p.log.asks, name)
	p.log.mu.Unlock()
	return p.fakePeer.GetBlock(ctx, ref)
}

// ownerOf is the owner of ref among nodes, computed here from the scores.
func ownerOf(ref eris.Ref, nodes map[string]NodeID) string {
	best, top := "", uint64(0)
	for name, id := range nodes {
		if sc := id.score(ref); best == "" || sc > top {
			best, top = name, sc
		}
	}
	return best
}

// swarmPool is a pool of node "self" with a publisher given to NewPool and
// two neighbours n1 and n2 added with their node ids, every request
// logged.
func swarmPool(t *testing.T, opts PoolOptions, pub, n1, n2 *fakePeer) (*Pool, *askLog, map[string]NodeID) {
	t.Helper()
	log := &askLog{}
	nodes := map[string]NodeID{"self": NewNodeID(), "n1": NewNodeID(), "n2": NewNodeID()}
	opts.Node = nodes["self"]
	pl := NewPool([]Peer{&loggedPeer{pub, log}}, opts)
	t.Cleanup(func() { pl.Close() })
	for _, n := range []*fakePeer{n1, n2} {
		if !pl.AddNeighbour(&loggedPeer{n, log}, nodes[n.name]) {
			t.Fatalf("AddNeighbour refused %s", n.name)
		}
	}
	return pl, log, nodes
}

// TestPoolAsksOwnerFirst: in a swarm a block is asked of its owner among
// the neighbours first (the highest rendezvous score, this node
// included), then of the other neighbours, and of the publisher only when
// no neighbour had it; a relayed request (NoRelay) keeps that order and
// its mark.
func TestPoolAsksOwnerFirst(t *testing.T) {
	// No hedging: the order asked is the ranking alone. (A hedge fired
	// by a CPU-starved answer would also make the request cancelled at
	// the other peer count against it, and the peer could die.)
	noHedge := PoolOptions{HedgeMin: time.Minute, HedgeMax: time.Minute}
	blocks := randomBlocks(t, 48, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	empty, _ := storeWith(t)
	ctx := context.Background()

	t.Run("neighbours hold the blocks", func(t *testing.T) {
		pl, log, nodes := swarmPool(t, noHedge, newFake("pub", store, 0), newFake("n1", store, 0), newFake("n2", store, 0))
		for i, ref := range refs {
			if _, err := pl.GetBlock(ctx, ref); err != nil {
				t.Fatal(err)
			}
			asks := log.take()
			owner := ownerOf(ref, nodes)
			if owns := pl.Owns(ref); owns != (owner == "self") {
				t.Errorf("block %d: Owns says %v, the scores say the owner is %s", i, owns, owner)
			}
			want := owner
			if owner == "self" {
				want = "n1 or n2"
			}
			if len(asks) != 1 || (owner != "self" && asks[0] != owner) || asks[0] == "pub" {
				t.Errorf("block %d owned by %s: asked %v, want only %s", i, owner, asks, want)
			}
		}
	})

	t.Run("nobody holds the blocks", func(t *testing.T) {
		pl, log, nodes := swarmPool(t, noHedge, newFake("pub", store, 0), newFake("n1", empty, 0), newFake("n2", empty, 0))
		for i, ref := range refs {
			for _, relayed := range []bool{false, true} {
				rctx, held := ctx, ""
				if relayed {
					rctx, held = NoRelay(ctx), " held"
				}
				if _, err := pl.GetBlock(rctx, ref); err != nil {
					t.Fatal(err)
				}
				asks := log.take()
				owner := ownerOf(ref, nodes)
				ok := len(asks) == 3 && asks[2] == "pub"+held && slices.Contains(asks, "n1"+held) && slices.Contains(asks, "n2"+held)
				if owner != "self" {
					ok = ok && asks[0] == owner+held
				}
				if !ok {
					t.Errorf("block %d owned by %s (relayed %v): asked %v, want the owner first, the other neighbour, the publisher last", i, owner, relayed, asks)
				}
			}
		}
	})
}

// TestPoolOwnersAgree: nodes that know each other agree on the owner of
// every block: exactly one of them owns it.
func TestPoolOwnersAgree(t *testing.T) {
	store, refs := storeWith(t, randomBlocks(t, 200, eris.BlockSize1K)...)
	ids := []NodeID{NewNodeID(), NewNodeID(), NewNodeID(), NewNodeID()}
	var pools []*Pool
	for i, id := range ids {
		pl := NewPool(nil, PoolOptions{Node: id})
		defer pl.Close()
		for j, other := range ids {
			if j != i {
				pl.AddNeighbour(newFake(fmt.Sprint("n", j), store, 0), other)
			}
		}
		pools = append(pools, pl)
	}
	owned := make([]int, len(ids))
	for _, ref := range refs {
		n := 0
		for i, pl := range pools {
			if pl.Owns(ref) {
				n++
				owned[i]++
			}
		}
		if n != 1 {
			t.Fatalf("block %s has %d owners, want 1", ref.Str(), n)
		}
	}
	t.Logf("blocks owned by each of %d nodes: %v", len(ids), owned)
}

// TestPoolWaitsForOwner: while a block's owner is being asked, the
// publisher is not, even when the owner is slower than its hedge delay
// (it is fetching the block for the swarm) or its window is full (here
// one request, with four reads at once); an owner that fails sends the
// request on to the publisher.
func TestPoolWaitsForOwner(t *testing.T) {
	blocks := randomBlocks(t, 64, eris.BlockSize1K)
	store, refs := storeWith(t, blocks...)
	empty, _ := storeWith(t)
	pub, slow := newFake("pub", store, 0), newFake("n1", store, 50*time.Millisecond)
	pl, log, nodes := swarmPool(t, PoolOptions{Window: 1, HedgeInitial: time.Millisecond, HedgeMin: time.Millisecond, HedgeMax: time.Minute}, pub, slow, newFake("n2", empty, 0))
	ctx := context.Background()
	var mine []int // the blocks n1 owns
	for i, ref := range refs {
		if ownerOf(ref, nodes) == "n1" {
			mine = append(mine, i)
		}
	}
	if len(mine) < 2 {
		t.Skipf("n1 owns %d of %d random blocks", len(mine), len(refs))
	}
	var ownedRefs []eris.Ref
	var ownedBlocks [][]byte
	for _, i := range mine[:len(mine)/2] {
		ownedRefs, ownedBlocks = append(ownedRefs, refs[i]), append(ownedBlocks, blocks[i])
	}
	fetchAll(t, ctx, pl, ownedRefs, ownedBlocks, 4)
	if n := slow.maxInFlight.Load(); n != 1 {
		t.Errorf("the owner had %d requests in flight, its window is 1", n)
	}
	if n := pub.calls.Load(); n != 0 {
		t.Errorf("the publisher was asked %d times while the owner was fetching (asks %v)", n, log.take())
	}
	slow.down.Store(true)
	for _, i := range mine[len(mine)/2:] {
		if b, err := pl.GetBlock(ctx, refs[i]); err != nil || !bytes.Equal(b, blocks[i]) {
			t.Fatalf("block %d with its owner down: %v", i, err)
		}
	}
	if pub.calls.Load() == 0 {
		t.Error("with the owner down the publisher was never asked")
	}
}
