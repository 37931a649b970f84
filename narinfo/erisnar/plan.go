package erisnar

import (
	"context"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"erismount/eris"
	"erismount/erisfs"
)

// local is what the planner needs of a tree's getter: which blocks it holds
// without reading them, and reading many held blocks at once, verified
// (cache.Tiered and cache.SQLite have both).
type local interface {
	HasBlocks(ctx context.Context, refs []eris.Ref) ([]bool, error)
	GetHeldBlocks(ctx context.Context, refs []eris.Ref) ([][]byte, error)
}

const (
	// planBatch is how many files the planner walks and looks up at once,
	// after a first batch of planFirst, doubling.
	planBatch = 256
	planFirst = 8
	// planWalkers bounds the contents whose internal nodes are walked at
	// once: many, for a tree whose nodes are not cached (a cold read) is
	// walked at a round trip per file.
	planWalkers = 64
	// stageFiles and stageLeaves bound a group of files whose held leaves
	// are read in one GetHeldBlocks.
	stageFiles  = 32
	stageLeaves = 256
)

// A planner feeds the writer when the tree's getter is a local store in
// front of a remote one (cache.Tiered). Two stages run ahead of it:
//
//   - plan walks every file's internal nodes in order (the tree's node
//     cache keeps them for the reads), asks the store which leaves it
//     holds, and queues the missing ones, which FetchConcurrency fetchers
//     request through the getter (its cache keeps them) at most FetchAhead
//     bytes ahead of the writer: the link carries them while the writer
//     streams what is held, instead of a round trip per file it reaches.
//   - stage reads the held leaves of the next small files in bulk (one
//     query for many blocks costs a third of a query per block) and hands
//     each file with its blocks to a fetch, as the plain path does.
//
// A failing plan or bulk read is no failure of the nar: the file fetches
// then read through the tree's getter, which reports what fails.
type planner struct {
	t    *erisfs.Tree
	loc  local
	opts Options
	win  *window
}

// plan is one file's leaves and which of them the store holds.
type plan struct {
	e      *erisfs.Entry
	leaves []eris.Ref
	held   []bool
}

// run sends every file, in order, to ahead, starting its fetch (owned by
// wg), and closes ahead.
func (p *planner) run(ctx context.Context, wg *sync.WaitGroup, ahead chan<- *file) {
	defer close(ahead)
	var files []*erisfs.Entry
	for e := range p.t.All() {
		if e.Kind().IsFile() {
			files = append(files, e)
		}
	}
	// Plans and missing blocks are queued without waiting on their
	// consumers: the plan runs ahead of the writer, bounded by the window.
	plans := make(chan *plan, len(files))
	missing := make(chan eris.Ref, max(1, p.opts.FetchAhead/eris.BlockSize1K))
	conc := p.opts.FetchConcurrency
	if conc <= 0 {
		conc = 256
	}
	g := p.t.Getter()
	for range conc {
		wg.Go(func() {
			bctx := eris.Background(ctx)
			for ref := range missing {
				if ctx.Err() == nil {
					g.GetBlock(bctx, ref) // kept by the getter's cache; errors surface in the writer's read
				}
			}
		})
	}
	wg.Go(func() {
		defer close(missing)
		defer close(plans)
		p.plan(ctx, files, plans, missing)
	})
	p.stage(ctx, wg, files, plans, ahead)
}

// plan walks files in batches, sends each file's plan in order, and queues
// the leaves the store lacks (each content once), admitted by the window.
func (p *planner) plan(ctx context.Context, files []*erisfs.Entry, plans chan<- *plan, missing chan<- eris.Ref) {
	queued := make(map[eris.ReadCapability]bool)
	// The first batches are small, so that the writer starts at once.
	size := planFirst
	for start := 0; start < len(files); start += size {
		size = min(2*size, planBatch)
		batch := files[start:min(start+size, len(files))]
		// The root nodes of the batch in one bulk read, then the walks.
		var roots []eris.Ref
		for _, e := range batch {
			if e.Capability().Level() > 0 {
				roots = append(roots, e.Capability().Root())
			}
		}
		sg := p.stagedGetter(ctx, roots)
		ps := make([]*plan, len(batch))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(planWalkers)
		for i, e := range batch {
			g.Go(func() error {
				leaves, err := p.t.Leaves(gctx, e, sg)
				ps[i] = &plan{e: e, leaves: leaves}
				return err
			})
		}
		if g.Wait() != nil {
			return
		}
		var all []eris.Ref
		for _, pl := range ps {
			all = append(all, pl.leaves...)
		}
		held, err := p.loc.HasBlocks(ctx, all)
		if err != nil {
			return
		}
		at := 0
		for _, pl := range ps {
			pl.held = held[at : at+len(pl.leaves)]
			at += len(pl.leaves)
			plans <- pl // room for every file
		}
		for _, pl := range ps {
			rc := pl.e.Capability()
			if queued[rc] {
				continue
			}
			queued[rc] = true
			var miss []eris.Ref
			for i, ref := range pl.leaves {
				if !pl.held[i] {
					miss = append(miss, ref)
				}
			}
			if len(miss) == 0 {
				continue
			}
			if p.win.admit(ctx, pl.e, int64(len(miss))*int64(rc.BlockSize())) != nil {
				return
			}
			for _, ref := range miss {
				select {
				case missing <- ref:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// stage sends files to ahead in order, each with the held leaves of its
// first opts.SmallFile bytes read in bulk with those of the files around
// it, and starts their fetches.
func (p *planner) stage(ctx context.Context, wg *sync.WaitGroup, files []*erisfs.Entry, plans <-chan *plan, ahead chan<- *file) {
	type staging struct {
		f  *file
		pl *plan // nil: no bulk read
	}
	var group []staging
	leaves := 0
	// flush sends the group's files to the writer, in order, and reads
	// their held leaves in the background: the groups ahead of the writer
	// (ReadAhead files) are read and verified on every core.
	flush := func() bool {
		var refs []eris.Ref
		for _, s := range group {
			if s.pl != nil {
				for i, ref := range s.pl.leaves {
					if s.pl.held[i] {
						refs = append(refs, ref)
					}
				}
			}
		}
		g := slices.Clone(group)
		group, leaves = group[:0], 0
		// The read starts before the files are handed over: the writer
		// may be waiting for the first of them already.
		wg.Go(func() {
			var got [][]byte
			if len(refs) > 0 {
				got, _ = p.loc.GetHeldBlocks(ctx, refs) // nil on failure: the fetches read alone
			}
			at := 0
			for _, s := range g {
				if s.pl != nil {
					n := 0
					for _, h := range s.pl.held {
						if h {
							n++
						}
					}
					if got != nil {
						s.f.g = newStaged(refs[at:at+n], got[at:at+n], p.t.Getter())
					}
					at += n
				}
				wg.Go(func() { s.f.fetch(ctx, p.t, p.opts.SmallFile) })
			}
		})
		for _, s := range g {
			select {
			case ahead <- s.f:
			case <-ctx.Done():
				return false
			}
		}
		return true
	}
	open := true
	for _, e := range files {
		var pl *plan
		if open {
			select {
			case pl, open = <-plans:
			default:
				// Not planned yet: hand over what is grouped before
				// waiting, or the writer could wait for this group
				// while the plan waits for the writer (the window).
				if len(group) > 0 && !flush() {
					return
				}
				select {
				case pl, open = <-plans:
				case <-ctx.Done():
					return
				}
			}
		}
		f := &file{e: e, done: make(chan struct{})}
		switch {
		case pl == nil || pl.e != e:
			group = append(group, staging{f, nil})
		case len(pl.leaves) <= p.opts.SmallFile/e.Capability().BlockSize()+1:
			group = append(group, staging{f, pl})
			leaves += len(pl.leaves)
		default: // a large file: its leaves in bulk as its reads reach them
			f.g = newSegmented(p.loc, p.t.Getter(), pl)
			group = append(group, staging{f, nil})
		}
		if len(group) >= stageFiles || leaves >= stageLeaves {
			if !flush() {
				return
			}
		}
	}
	flush()
}

// stagedGetter reads the held blocks of refs in bulk and returns a getter
// handing them out, the tree's getter behind it; on failure the tree's
// getter alone.
func (p *planner) stagedGetter(ctx context.Context, refs []eris.Ref) eris.BlockGetter {
	if len(refs) == 0 {
		return nil
	}
	got, err := p.loc.GetHeldBlocks(ctx, refs)
	if err != nil {
		return nil
	}
	return newStaged(refs, got, p.t.Getter())
}

// staged hands out blocks read ahead, each once (the reader decrypts the
// slice in place), and asks g for any other.
type staged struct {
	mu     sync.Mutex
	blocks map[eris.Ref][]byte
	g      eris.BlockGetter
}

func newStaged(refs []eris.Ref, blocks [][]byte, g eris.BlockGetter) *staged {
	return &staged{blocks: byRef(refs, blocks), g: g}
}

// GetBlock returns the staged block of ref, verified where it was read, or
// asks the getter behind.
func (s *staged) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	return take(ctx, &s.mu, s.blocks, ref, s.g)
}

// byRef maps refs[i] to blocks[i], leaving out the blocks not found (nil).
func byRef(refs []eris.Ref, blocks [][]byte) map[eris.Ref][]byte {
	m := make(map[eris.Ref][]byte, len(refs))
	for i, b := range blocks {
		if b != nil {
			m[refs[i]] = b
		}
	}
	return m
}

// take hands out the block of ref in m once (m is guarded by mu), or asks
// g when m has none.
func take(ctx context.Context, mu *sync.Mutex, m map[eris.Ref][]byte, ref eris.Ref, g eris.BlockGetter) ([]byte, error) {
	mu.Lock()
	b, ok := m[ref]
	if ok {
		delete(m, ref)
	}
	mu.Unlock()
	if ok {
		return b, nil
	}
	return g.GetBlock(ctx, ref)
}

// segmentLeaves is how many leaves of a large file one bulk read gets: a
// chunk of copyAhead in 32 KiB leaves.
const segmentLeaves = chunkSize / eris.BlockSize32K

// segmented hands out the held leaves of one large file, reading them from
// the store in bulk, a segment of segmentLeaves at a time, when the first
// of a segment is asked for; the getter behind serves the rest. Blocks are
// handed out once and dropped, so what it holds is bounded by the reads in
// flight.
type segmented struct {
	loc    local
	g      eris.BlockGetter
	leaves []eris.Ref
	held   []bool
	at     map[eris.Ref]int // a leaf's first index

	mu   sync.Mutex
	segs map[int]*segment
}

type segment struct {
	done   chan struct{}
	blocks map[eris.Ref][]byte // guarded by segmented.mu once done
}

func newSegmented(loc local, g eris.BlockGetter, pl *plan) *segmented {
	s := &segmented{loc: loc, g: g, leaves: pl.leaves, held: pl.held, at: make(map[eris.Ref]int, len(pl.leaves)), segs: make(map[int]*segment)}
	for i, ref := range pl.leaves {
		if _, ok := s.at[ref]; !ok {
			s.at[ref] = i
		}
	}
	return s
}

// GetBlock returns the leaf from its segment, read in bulk, or asks the
// getter behind.
func (s *segmented) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	i, ok := s.at[ref]
	if !ok {
		return s.g.GetBlock(ctx, ref) // an internal node
	}
	n := i / segmentLeaves
	s.mu.Lock()
	seg, loaded := s.segs[n]
	if !loaded {
		seg = &segment{done: make(chan struct{})}
		s.segs[n] = seg
	}
	s.mu.Unlock()
	if !loaded {
		var refs []eris.Ref
		for k := n * segmentLeaves; k < min((n+1)*segmentLeaves, len(s.leaves)); k++ {
			if s.held[k] {
				refs = append(refs, s.leaves[k])
			}
		}
		got, err := s.loc.GetHeldBlocks(ctx, refs)
		if err != nil {
			got = nil // the getter behind serves them
		}
		blocks := byRef(refs, got)
		s.mu.Lock()
		seg.blocks = blocks
		s.mu.Unlock()
		close(seg.done)
	}
	select {
	case <-seg.done:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	return take(ctx, &s.mu, seg.blocks, ref, s.g)
}
