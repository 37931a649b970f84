package fetcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"erismount/eris"
)

// PoolOptions configure a Pool. The zero value gives the defaults.
type PoolOptions struct {
	// Logger receives peer state changes (dead, recovered); nil discards.
	Logger *slog.Logger
	// Window bounds the requests in flight to one peer (default 256, as a
	// CoAP peer's own ClientOptions.MaxInFlight).
	Window int
	// HedgeQuantile is the quantile of a peer's recent answer times after
	// which the same block is also asked of the next peer (default 0.95).
	HedgeQuantile float64
	// HedgeInitial is the hedge delay of a peer with too few answers to
	// estimate it (default 100ms); HedgeMin and HedgeMax bound any hedge
	// delay (defaults 1ms and 2s).
	HedgeInitial, HedgeMin, HedgeMax time.Duration
	// AttemptTimeout bounds one request to one peer (default 10s); the
	// caller's context deadline, when sooner, always wins.
	AttemptTimeout time.Duration
	// FailThreshold is the number of consecutive failures (errors and
	// timeouts) after which a peer is dead (default 3). A corrupt block
	// makes it dead at once.
	FailThreshold int
	// Backoff is how long a dead peer is skipped before one request probes
	// it again (default 1s); it doubles after each failed probe, up to
	// MaxBackoff (default 1 minute). Background requests (eris.Background)
	// wait for the back-off to end.
	Backoff, MaxBackoff time.Duration
	// ProbeInterval is the least time between two probes of a dead peer
	// that a read someone waits for makes before the peer's back-off ends,
	// when every peer is backing off (default 1s, at most MaxBackoff).
	// Such a read probes each dead peer not probed for ProbeInterval, at
	// most one probe in flight per peer, or waits for a probe in flight,
	// instead of failing at once: a peer that is back is used again within
	// about ProbeInterval, however long its back-off has grown.
	ProbeInterval time.Duration
	// Retries is how many times one GetBlock asks a peer again after a
	// failure that may pass (broken connection, timeout, 5.xx), when the
	// peer is still live (default 2; negative for none).
	Retries int
	// Node is this node's id in its swarm (see AddNeighbour and Owns);
	// zero gives a random one.
	Node NodeID
}

func (o *PoolOptions) fill() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Window <= 0 {
		o.Window = 256
	}
	if o.HedgeQuantile <= 0 || o.HedgeQuantile > 1 {
		o.HedgeQuantile = 0.95
	}
	if o.HedgeInitial <= 0 {
		o.HedgeInitial = 100 * time.Millisecond
	}
	if o.HedgeMin <= 0 {
		o.HedgeMin = time.Millisecond
	}
	if o.HedgeMax <= 0 {
		o.HedgeMax = 2 * time.Second
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 10 * time.Second
	}
	if o.FailThreshold <= 0 {
		o.FailThreshold = 3
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.MaxBackoff < o.Backoff {
		o.MaxBackoff = max(time.Minute, o.Backoff)
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
	}
	o.ProbeInterval = min(o.ProbeInterval, o.MaxBackoff)
	if o.Retries == 0 {
		o.Retries = 2
	}
	o.Retries = max(o.Retries, 0)
	if o.Node.IsZero() {
		o.Node = NewNodeID()
	}
}

// Pool fetches blocks from several peers: it ranks them by latency and
// failures, keeps a window of requests in flight per peer, hedges a
// request that is slower than the peer's usual answer time to the next
// peer (the first valid block wins, the others are cancelled), skips dead
// peers and probes them once per backoff period (and, when every peer is
// dead, on a demand read at most once per ProbeInterval), and verifies
// every block against its reference before returning it.
//
// Pool is an eris.BlockGetter. It owns its peers: Close closes them.
type Pool struct {
	opts    PoolOptions
	log     *slog.Logger
	peers   atomic.Pointer[[]*poolPeer] // replaced, never modified, by AddPeer
	peersMu sync.Mutex                  // serializes AddPeer

	ctx    context.Context // cancelled by Close: ends every attempt
	cancel context.CancelFunc
	mu     sync.RWMutex // guards closed against wg.Add
	closed bool
	wg     sync.WaitGroup // attempts

	probeMu    sync.Mutex
	probeEnded chan struct{} // closed, and replaced, when a probe ends
}

// verifyingPeer is implemented by the peers Dial returns: they verify
// every block themselves, so the pool does not hash it twice.
type verifyingPeer interface{ verifiesBlocks() }

func (*coapPeer) verifiesBlocks() {}
func (*httpPeer) verifiesBlocks() {}

type poolPeer struct {
	p        Peer
	url      string
	verifies bool
	window   chan struct{}
	// bg bounds the background requests (eris.Background) in the window
	// to three quarters of it: the rest stays free for demand reads.
	bg chan struct{}

	lat  latencyWindow
	hist histogram

	mu        sync.Mutex
	failures  int       // consecutive, counted once per cause (see record)
	lastFail  time.Time // when the last counted failure was recorded
	penalty   float64   // decaying count of recent failures, for ranking
	missRate  float64   // moving average of "not found" among its answers, for ranking
	weight    float64   // 1 for the peers given to NewPool, neighbourWeight for added ones
	added     bool      // added at run time (AddPeer, AddNeighbour): a neighbour
	node      NodeID    // a neighbour's node id (AddNeighbour); zero for the others
	deadUntil time.Time // zero: live
	backoff   time.Duration
	lastTry   time.Time // when the peer died or was last probed
	lastErr   error     // why it died (or its last probe failed)
	probing   bool

	requests, probes, hedges, blocks, bytes, notFound, errs, timeouts, corrupt atomic.Uint64
}

// NewPool returns a pool over peers, which it owns from now on.
func NewPool(peers []Peer, opts PoolOptions) *Pool {
	opts.fill()
	ctx, cancel := context.WithCancel(context.Background())
	pl := &Pool{opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel, probeEnded: make(chan struct{})}
	list := make([]*poolPeer, 0, len(peers))
	for _, p := range peers {
		list = append(list, pl.newPeer(p))
	}
	pl.peers.Store(&list)
	return pl
}

func (pl *Pool) newPeer(p Peer) *poolPeer {
	_, v := p.(verifyingPeer)
	return &poolPeer{
		p: p, url: p.URL(), verifies: v,
		window:  make(chan struct{}, pl.opts.Window),
		bg:      make(chan struct{}, max(1, pl.opts.Window*3/4)),
		backoff: pl.opts.Backoff,
		weight:  1,
	}
}

// neighbourWeight scales the estimated cost of a peer added at run time:
// at equal latency a neighbour is asked before the peers the pool was made
// with (publishers, typically), sparing their upload; a neighbour that
// often lacks the blocks is ranked down by its miss rate.
const neighbourWeight = 0.25

// peerList returns the peers now in the pool.
func (pl *Pool) peerList() []*poolPeer { return *pl.peers.Load() }

// AddPeer adds a peer learned at run time (a discovered neighbour); the
// pool ranks it like the others, by latency, failures and how often it
// lacks the blocks asked for, and at equal cost before the peers given to
// NewPool (see neighbourWeight).
// The pool owns p from now on. It reports false, and closes p, when the
// pool has a peer of the same URL already or is closed.
func (pl *Pool) AddPeer(p Peer) bool { return pl.add(p, NodeID{}) }

// add adds p as a peer learned at run time, a neighbour of this node's
// swarm if node is not zero.
func (pl *Pool) add(p Peer, node NodeID) bool {
	pl.mu.RLock()
	defer pl.mu.RUnlock()
	pl.peersMu.Lock()
	defer pl.peersMu.Unlock()
	old := pl.peerList()
	dup := slices.ContainsFunc(old, func(pp *poolPeer) bool { return pp.url == p.URL() })
	if pl.closed || dup {
		p.Close()
		return false
	}
	pp := pl.newPeer(p)
	pp.weight, pp.added, pp.node = neighbourWeight, true, node
	list := append(slices.Clip(old), pp)
	pl.peers.Store(&list)
	if node.IsZero() {
		pl.log.Info("peer added", "peer", p.URL())
	} else {
		pl.log.Info("neighbour added", "peer", p.URL(), "node", node)
	}
	return true
}

// AddNeighbour adds a node of this node's swarm, as AddPeer does, and
// counts it in the ownership of blocks (see Owns): from now on a block it
// owns is asked of it first, before the other neighbours and the peers
// given to NewPool. p should relay only the requests not marked NoRelay
// (DialNeighbour). It reports false, and closes p, when the pool has a
// peer of the same URL already (which then stays as it was) or is closed.
func (pl *Pool) AddNeighbour(p Peer, node NodeID) bool {
	if node == pl.opts.Node {
		node = NodeID{}
	}
	return pl.add(p, node)
}

// Node is this node's id in its swarm.
func (pl *Pool) Node() NodeID { return pl.opts.Node }

// Owns reports whether this node owns ref among itself and its live
// neighbours (AddNeighbour): whether its rendezvous score for ref is the
// highest. A node owns every block while it knows no neighbour.
func (pl *Pool) Owns(ref eris.Ref) bool {
	owner := pl.owner(ref, pl.peerList())
	return owner == nil
}

// owner returns the live neighbour among peers that owns ref, or nil when
// this node does (it has the highest score). A dead neighbour owns
// nothing: its blocks go to the next in line until it is back.
func (pl *Pool) owner(ref eris.Ref, peers []*poolPeer) *poolPeer {
	var best *poolPeer
	top := pl.opts.Node.score(ref)
	for _, pp := range peers {
		if pp.node.IsZero() {
			continue
		}
		if sc := pp.node.score(ref); sc > top && pp.live() {
			best, top = pp, sc
		}
	}
	return best
}

// Tiers of the peers asked for one block, in order: its owner among the
// neighbours, the other neighbours, the peers given to NewPool (the
// publishers). Without neighbours every peer is in the last tier. (A
// probe's tier is not used.)
const (
	tierOwner = iota
	tierNeighbour
	tierPublisher
)

// candidate is a peer chosen for one block, in the order to ask them.
type candidate struct {
	pp    *poolPeer
	probe bool // a dead peer whose backoff ended: asked alongside, not instead
	cost  float64
	tier  int
}

// candidates ranks the peers for one request: live peers by estimated
// latency times their recent failures (busy ones last), and dead peers
// whose backoff has ended as probes, at most one probe in flight each.
//
// When no peer is live nor due for a probe and early is set (a demand
// read), the dead peers not tried for ProbeInterval are probed early.
// wait is then closed when a probe in flight ends (nil if none is).
func (pl *Pool) candidates(ref eris.Ref, now time.Time, early bool) (live, probes []candidate, dead int, wait <-chan struct{}) {
	// Taken before looking at the peers: a probe seen in flight closes it
	// when it ends.
	ended := pl.probeWaiter()
	var resting []*poolPeer // dead, in their backoff, no probe in flight
	peers := pl.peerList()
	swarm := slices.ContainsFunc(peers, func(pp *poolPeer) bool { return !pp.node.IsZero() })
	var owner *poolPeer
	if swarm {
		owner = pl.owner(ref, peers)
	}
	for _, pp := range peers {
		pp.mu.Lock()
		isDead := !pp.deadUntil.IsZero()
		switch {
		case isDead && pp.probing:
			dead++
			wait = ended
		case isDead && now.Before(pp.deadUntil):
			dead++
			if now.Sub(pp.lastTry) >= pl.opts.ProbeInterval {
				resting = append(resting, pp)
			}
		case isDead:
			pl.startProbe(pp, now)
			probes = append(probes, candidate{pp: pp, probe: true})
		default:
			est, ok := pp.lat.estimate()
			if !ok {
				est = pl.opts.HedgeInitial / 4 // untried: worth a try
			}
			cost := est.Seconds() * (1 + pp.penalty) * (1 + 4*pp.missRate) * pp.weight * (0.9 + 0.2*rand.Float64())
			tier := tierPublisher
			switch {
			case !swarm:
			case pp == owner:
				tier = tierOwner
			case pp.added:
				tier = tierNeighbour
			}
			cost += float64(tier) * 1e3 // a tier is asked after those before it
			switch {
			case len(pp.window) < cap(pp.window):
			case tier < tierPublisher:
				// A neighbour's full window is waited for, in its
				// tier: asking the publisher instead would cost it a
				// copy the owner is fetching anyway.
				cost += 500
			default:
				cost += 1e6 // full window: after every peer with room
			}
			live = append(live, candidate{pp: pp, cost: cost, tier: tier})
		}
		pp.mu.Unlock()
	}
	if early && len(live) == 0 && len(probes) == 0 {
		probes = pl.earlyProbes(resting, now, len(resting))
	}
	slices.SortFunc(live, func(a, b candidate) int {
		switch {
		case a.cost < b.cost:
			return -1
		case a.cost > b.cost:
			return 1
		}
		return 0
	})
	return live, probes, dead, wait
}

// earlyProbes starts a probe of each of peers (nil: every peer) that is
// dead, not being probed, and not tried for ProbeInterval; at most limit.
func (pl *Pool) earlyProbes(peers []*poolPeer, now time.Time, limit int) []candidate {
	if peers == nil {
		peers = pl.peerList()
	}
	var probes []candidate
	for _, pp := range peers {
		if len(probes) >= limit {
			break
		}
		pp.mu.Lock()
		if !pp.deadUntil.IsZero() && !pp.probing && now.Sub(pp.lastTry) >= pl.opts.ProbeInterval {
			pl.startProbe(pp, now)
			probes = append(probes, candidate{pp: pp, probe: true})
		}
		pp.mu.Unlock()
	}
	return probes
}

// startProbe marks pp as probed; pp.mu is held.
func (pl *Pool) startProbe(pp *poolPeer, now time.Time) {
	pp.probing = true
	pp.lastTry = now
	pp.probes.Add(1)
}

// probeWaiter returns a channel closed when the next probe ends.
func (pl *Pool) probeWaiter() <-chan struct{} {
	pl.probeMu.Lock()
	defer pl.probeMu.Unlock()
	return pl.probeEnded
}

// probeOver tells the reads waiting for a probe that one ended; pp.mu is
// held and pp.probing was just cleared.
func (pl *Pool) probeOver() {
	pl.probeMu.Lock()
	close(pl.probeEnded)
	pl.probeEnded = make(chan struct{})
	pl.probeMu.Unlock()
}

// hedgeAfter is how long to wait for pp before asking the next peer.
func (pl *Pool) hedgeAfter(pp *poolPeer) time.Duration {
	d, ok := pp.lat.quantile(pl.opts.HedgeQuantile)
	if !ok {
		d = pl.opts.HedgeInitial
	}
	return min(max(d, pl.opts.HedgeMin), pl.opts.HedgeMax)
}

type attemptResult struct {
	c     candidate
	block []byte
	err   error
}

// GetBlock returns the verified block from the first peer that has it.
//
// It errors with eris.ErrNotFound when every peer asked said it does not
// have the block, ErrNoPeers when every peer is backing off, the context's
// error when ctx ends first, and otherwise the peers' errors.
func (pl *Pool) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	live, probes, dead, err := pl.choose(ctx, ref)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(pl.ctx, cancel)
	defer stop()

	// Room for every attempt: the ranked peers, their retries, the probes,
	// and the early probes of a demand read (at most one per peer).
	spare := len(pl.peerList())
	results := make(chan attemptResult, len(live)+len(probes)+pl.opts.Retries+spare)
	running := 0
	start := func(c candidate, hedge bool) bool {
		pl.mu.RLock()
		defer pl.mu.RUnlock()
		if pl.closed {
			return false
		}
		pl.wg.Add(1)
		running++
		// A probe runs to its end even when the caller has its block, so
		// that it settles whether the peer is back.
		parent := actx
		if c.probe {
			parent = pl.ctx
		}
		go pl.attempt(parent, c, ref, hedge, results)
		return true
	}
	// Probes run alongside the ranked peers: a dead peer costs the caller
	// nothing, and answers fail it back.
	for _, c := range probes {
		if !start(c, false) {
			pl.endProbe(c.pp)
		}
	}
	next := 0
	// Prefetching (eris.Background) is never hedged: nobody waits for it,
	// and a hedge costs a second peer's upload (a swarm's publisher).
	background := eris.IsBackground(ctx)
	var hedge <-chan time.Time
	// While the block's owner is being asked, the publishers are not: the
	// owner fetches the block from them once for the whole swarm, and a
	// second copy would cost their upload. Only an owner that fails, or
	// stays silent for ownerPatience, sends the request on to them.
	var ownerAsked time.Time
	var ownerPatience time.Duration
	ownerRunning := 0
	startNext := func(isHedge bool) {
		if next >= len(live) {
			hedge = nil
			return
		}
		c := live[next]
		if c.tier == tierPublisher && ownerRunning > 0 {
			if wait := ownerPatience - time.Since(ownerAsked); wait > 0 {
				hedge = nil
				if !background {
					hedge = time.After(wait)
				}
				return
			}
		}
		next++
		if !start(c, isHedge) {
			return
		}
		if c.tier == tierOwner {
			ownerRunning++
			ownerAsked = time.Now()
			ownerPatience = max(pl.opts.HedgeMax, 4*pl.hedgeAfter(c.pp))
		}
		if !background {
			hedge = time.After(pl.hedgeAfter(c.pp))
		}
	}
	startNext(false)
	if running == 0 {
		return nil, ErrClosed
	}

	var errs []error
	retries := pl.opts.Retries
	probedEarly := false
	for {
		select {
		case r := <-results:
			running--
			if r.err == nil {
				return r.block, nil
			}
			if r.c.tier == tierOwner && !r.c.probe {
				ownerRunning--
			}
			errs = append(errs, r.err)
			if retries > 0 && !r.c.probe && retriable(r.err) && r.c.pp.live() && ctx.Err() == nil {
				retries--
				live = append(live, r.c)
			}
			if next < len(live) {
				startNext(false)
			}
			if running == 0 && !background && !probedEarly && ctx.Err() == nil {
				// Every live peer failed or lacks the block: a demand
				// read probes the dead peers, which may have it, once.
				// Not those this read probed already (a probe failing
				// at once must not make one read probe a peer twice).
				probedEarly = true
				var others []*poolPeer
				for _, pp := range pl.peerList() {
					if !slices.ContainsFunc(probes, func(c candidate) bool { return c.pp == pp }) {
						others = append(others, pp)
					}
				}
				if len(others) == 0 {
					return nil, pl.failure(ctx, ref, errs, dead)
				}
				for _, c := range pl.earlyProbes(others, time.Now(), spare) {
					if !start(c, false) {
						pl.endProbe(c.pp)
					}
				}
			}
			if running == 0 {
				return nil, pl.failure(ctx, ref, errs, dead)
			}
		case <-hedge:
			startNext(true)
		case <-actx.Done():
			if ctx.Err() == nil && pl.ctx.Err() != nil {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("get block %s: %w (%d peers failed first: %v)", ref.Str(), ctx.Err(), len(errs), errors.Join(errs...))
		}
	}
}

// choose returns the candidates for one request. When every peer is
// backing off, a demand read (not eris.Background) probes the peers not
// tried for ProbeInterval, or waits for the probes in flight to end, each
// at most once per peer; a background read fails at once.
func (pl *Pool) choose(ctx context.Context, ref eris.Ref) (live, probes []candidate, dead int, err error) {
	demand := !eris.IsBackground(ctx)
	for waits := 0; ; waits++ {
		var wait <-chan struct{}
		live, probes, dead, wait = pl.candidates(ref, time.Now(), demand && waits == 0)
		switch {
		case len(live) > 0 || len(probes) > 0:
			return live, probes, dead, nil
		case len(pl.peerList()) == 0:
			return nil, nil, 0, fmt.Errorf("get block %s: %w: the pool has no peers", ref.Str(), ErrNoPeers)
		case wait == nil || !demand || waits >= len(pl.peerList()):
			// Why they died goes with it: a peer dead for a corrupt
			// block makes this a verification failure (errors.Is
			// eris.ErrCorrupt), not only an unreachable one.
			if why := pl.deadReasons(); why != nil {
				return nil, nil, dead, fmt.Errorf("get block %s: %w: all %d peers are backing off after failures (%w)", ref.Str(), ErrNoPeers, dead, why)
			}
			return nil, nil, dead, fmt.Errorf("get block %s: %w: all %d peers are backing off after failures", ref.Str(), ErrNoPeers, dead)
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, nil, dead, fmt.Errorf("get block %s: %w (waiting for a probe of a peer backing off)", ref.Str(), ctx.Err())
		case <-pl.ctx.Done():
			return nil, nil, dead, ErrClosed
		}
	}
}

// deadReasons joins the errors the dead peers died of.
func (pl *Pool) deadReasons() error {
	var errs []error
	for _, pp := range pl.peerList() {
		pp.mu.Lock()
		if !pp.deadUntil.IsZero() && pp.lastErr != nil {
			errs = append(errs, pp.lastErr)
		}
		pp.mu.Unlock()
	}
	return errors.Join(errs...)
}

// retriable reports whether asking the same peer again may work: not for
// an answer (not found) nor a corrupt block.
func retriable(err error) bool {
	return !errors.Is(err, eris.ErrNotFound) && !errors.Is(err, eris.ErrCorrupt) && !errors.Is(err, ErrClosed)
}

func (pp *poolPeer) live() bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.deadUntil.IsZero()
}

// failure builds the error of a GetBlock whose every attempt failed.
func (pl *Pool) failure(ctx context.Context, ref eris.Ref, errs []error, dead int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("get block %s: %w", ref.Str(), err)
	}
	var other []error
	for _, err := range errs {
		if !errors.Is(err, eris.ErrNotFound) {
			other = append(other, err)
		}
	}
	if len(other) == 0 && dead == 0 {
		return &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w: none of %d peers has it", eris.ErrNotFound, len(errs))}
	}
	// Some peer failed or was skipped: the block may exist there, so this
	// is not ErrNotFound.
	return &unavailableError{ref: ref, notFound: len(errs) - len(other), dead: dead, errs: other}
}

// attempt asks one peer for the block and records how it went.
func (pl *Pool) attempt(ctx context.Context, c candidate, ref eris.Ref, hedge bool, out chan<- attemptResult) {
	defer pl.wg.Done()
	pp := c.pp
	r := attemptResult{c: c}
	defer func() { out <- r }()
	sems := []chan struct{}{pp.window}
	if eris.IsBackground(ctx) {
		sems = []chan struct{}{pp.bg, pp.window}
	}
	for _, sem := range sems {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
		case <-ctx.Done():
			r.err = peerErr(pp.url, "get", ref, ctx.Err())
			if c.probe {
				pl.endProbe(pp)
			}
			return
		}
	}
	pp.requests.Add(1)
	if hedge {
		pp.hedges.Add(1)
	}
	actx, cancel := context.WithTimeout(ctx, pl.opts.AttemptTimeout)
	defer cancel()
	t0 := time.Now()
	b, err := pp.p.GetBlock(actx, ref)
	if err == nil && !pp.verifies {
		if verr := ref.Verify(b); verr != nil {
			err = peerErr(pp.url, "get", ref, verr)
		}
	}
	r.block, r.err = b, err
	pl.record(pp, c.probe, ctx, t0, len(b), err)
}

// record updates a peer's counters, latency and state after an attempt
// started at t0.
//
// Consecutive failures are counted once per cause: a failure of an attempt
// that was already in flight when the last failure was counted, and that
// comes within failBurst of it, does not count again. A connection that
// breaks fails every request on it at once, and a silent peer times out
// every request in flight; either is one failure, and the peer is dead
// only when later requests fail too.
func (pl *Pool) record(pp *poolPeer, probe bool, ctx context.Context, t0 time.Time, n int, err error) {
	dur := time.Since(t0)
	answered := err == nil || errors.Is(err, eris.ErrNotFound)
	if answered {
		pp.lat.add(dur)
		pp.hist.observe(dur)
	}
	switch {
	case err == nil:
		pp.blocks.Add(1)
		pp.bytes.Add(uint64(n))
	case errors.Is(err, eris.ErrNotFound):
		pp.notFound.Add(1)
	case errors.Is(err, eris.ErrCorrupt):
		pp.corrupt.Add(1)
		pl.log.Warn("peer sent a corrupt block", "peer", pp.url, "err", err)
	case ctx.Err() != nil:
		// Cancelled: another peer answered first, or the caller gave up.
		// That only counts against this peer if it was slower than its
		// usual answer time (a peer that never answers is caught here).
		if dur < pl.hedgeAfter(pp) {
			if probe {
				pl.endProbe(pp)
			}
			return
		}
		pp.errs.Add(1)
		pp.timeouts.Add(1)
	default:
		pp.errs.Add(1)
		if errors.Is(err, context.DeadlineExceeded) {
			pp.timeouts.Add(1)
		}
	}

	pp.mu.Lock()
	defer pp.mu.Unlock()
	if probe {
		pp.probing = false
		defer pl.probeOver() // after the peer's new state is set
	}
	if answered {
		miss := 0.0
		if err != nil {
			miss = 1
		}
		pp.missRate = 0.9*pp.missRate + 0.1*miss
		if !pp.deadUntil.IsZero() {
			pl.log.Info("peer is back", "peer", pp.url)
		}
		pp.failures, pp.deadUntil, pp.backoff = 0, time.Time{}, pl.opts.Backoff
		pp.penalty /= 2
		return
	}
	now := time.Now()
	corrupt := errors.Is(err, eris.ErrCorrupt)
	if t0.After(pp.lastFail) || now.Sub(pp.lastFail) > failBurst || corrupt {
		pp.failures++
		pp.penalty++
		pp.lastFail = now
	}
	if corrupt {
		pp.penalty += 10
		pp.failures = max(pp.failures, pl.opts.FailThreshold)
	}
	switch {
	case probe:
		pp.backoff = min(2*pp.backoff, pl.opts.MaxBackoff)
		pp.deadUntil, pp.lastErr = now.Add(pp.backoff), err
		pl.log.Debug("peer still dead", "peer", pp.url, "next probe in", pp.backoff, "err", err)
	case !pp.deadUntil.IsZero():
		// A straggler of a peer already dead: its probe decides.
	case pp.failures >= pl.opts.FailThreshold:
		pp.deadUntil, pp.lastErr = now.Add(pp.backoff), err
		pp.lastTry = now
		pl.log.Warn("peer is dead, skipping it", "peer", pp.url, "for", pp.backoff, "err", err)
	}
}

// failBurst is how close together failures of requests in flight at the
// same time must be to count as one.
const failBurst = 50 * time.Millisecond

// endProbe frees the probe slot of a peer whose probe was not sent or was
// cut short without telling anything.
func (pl *Pool) endProbe(pp *poolPeer) {
	pp.mu.Lock()
	pp.probing = false
	pl.probeOver()
	pp.mu.Unlock()
}

// Stats returns the counters of every peer, in the order given to NewPool.
func (pl *Pool) Stats() []PeerStats {
	peers := pl.peerList()
	out := make([]PeerStats, 0, len(peers))
	now := time.Now()
	for _, pp := range peers {
		st := PeerStats{
			URL:        pp.url,
			Requests:   pp.requests.Load(),
			Hedges:     pp.hedges.Load(),
			Probes:     pp.probes.Load(),
			Blocks:     pp.blocks.Load(),
			Bytes:      pp.bytes.Load(),
			NotFound:   pp.notFound.Load(),
			Errors:     pp.errs.Load(),
			Timeouts:   pp.timeouts.Load(),
			Corrupt:    pp.corrupt.Load(),
			Latency:    pp.hist.snapshot(),
			HedgeAfter: pl.hedgeAfter(pp),
		}
		st.Estimate, _ = pp.lat.estimate()
		pp.mu.Lock()
		switch {
		case pp.probing:
			st.State = "probing"
		case !pp.deadUntil.IsZero() && now.Before(pp.deadUntil):
			st.State = "dead"
		case !pp.deadUntil.IsZero():
			st.State = "dead" // backoff over, probed by the next request
		default:
			st.State = "live"
		}
		pp.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// Close cancels requests in flight, waits for them, and closes the peers.
func (pl *Pool) Close() error {
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return nil
	}
	pl.closed = true
	pl.mu.Unlock()
	pl.cancel()
	pl.wg.Wait()
	var errs []error
	pl.peersMu.Lock()
	defer pl.peersMu.Unlock()
	for _, pp := range pl.peerList() {
		if err := pp.p.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
