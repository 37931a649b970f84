package fusefs

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"erismount/eris"
	"erismount/erisfs"
)

// Readahead across files ("tree-ahead").
//
// A program that reads a whole tree — tar, cp -r, rsync, a checksum of
// every file, a Go filepath.WalkDir — opens its files one after another in
// the sorted walk order, which is the order of the tree's entry numbers.
// Read lazily, each file costs round trips of its own (its size, its
// internal nodes, its leaves), and a reader that waits for them one file
// at a time is bound by the link's latency, not its bandwidth: over 20 ms
// a tree of small files reads at a few files per round trip. So once
// aheadTrigger opens in a row have gone forward in that order, the mount
// fetches the files that follow into the block cache, aheadBusy at a
// time, up to aheadFiles files and Options.TreeAhead bytes beyond the
// furthest file opened. One open, or opens that jump about (a program
// loading its libraries), prefetch nothing: reading one file of a tree
// still fetches only that file. A file larger than a quarter of the byte
// budget is left to the per-file readahead of whoever opens it.
const (
	aheadTrigger  = 2    // forward opens in a row that start it
	aheadFiles    = 1024 // most files prefetched beyond the furthest opened
	aheadBusy     = 64   // files fetched at once
	aheadFileConc = 8    // blocks in flight for each of them
	aheadExecConc = 32   // blocks in flight for an executable being run
	// aheadSlack is how far from the furthest file opened an open may be
	// and still belong to the same pass: concurrent readers of one walk
	// open files a little out of order.
	aheadSlack = 64
)

// treeAhead is a mount's readahead across files.
type treeAhead struct {
	m      *mountFS
	files  []*erisfs.Entry // the tree's files, by entry number
	budget int64           // most bytes prefetched beyond the furthest file opened

	mu         sync.Mutex
	last       int           // index in files of the furthest file opened; -1 before any
	run        int           // forward opens in a row
	next       int           // the next file to prefetch
	busy       int           // files being fetched
	ahead      map[int]int64 // sizes of the prefetched files beyond last
	aheadBytes int64         // their sum
}

func newTreeAhead(m *mountFS, budget int64) *treeAhead {
	a := &treeAhead{m: m, budget: budget, last: -1, ahead: make(map[int]int64)}
	for e := range m.tree.All() {
		if e.Kind().IsFile() {
			a.files = append(a.files, e)
		}
	}
	return a
}

// opened tells of an open of the file e.
func (a *treeAhead) opened(e *erisfs.Entry) {
	i, ok := slices.BinarySearchFunc(a.files, e.Ino(), func(f *erisfs.Entry, ino uint64) int { return cmp.Compare(f.Ino(), ino) })
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.last >= 0 && i > a.last && i <= max(a.last, a.next)+aheadSlack:
		a.run++
		a.advance(i)
	case a.last >= 0 && i <= a.last && i >= a.last-aheadSlack:
		// Behind the furthest, as concurrent readers of one pass are.
	default:
		// The first open, or a jump: a new pass may start here.
		a.run = 0
		a.last, a.next = i, i+1
		clear(a.ahead)
		a.aheadBytes = 0
	}
	if a.run >= aheadTrigger {
		a.fill()
	}
}

// openedExecutable tells of an open of the executable e, of size bytes.
// Running a program reads most of it, page by page as it faults, and each
// page the kernel asks for would wait for its own round trips; so an
// executable up to a quarter of the budget is fetched whole at once
// (CernVM-FS fetches every file whole on open; we do it for programs).
// Files fetched by a pass are merged with this fetch by the block cache.
func (a *treeAhead) openedExecutable(e *erisfs.Entry, size int64) {
	if e.Kind() != erisfs.Executable || size > a.budget/4 || size <= int64(e.Capability().BlockSize()) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(a.m.base, 4*a.m.opts.Deadline)
		defer cancel()
		if _, err := a.prefetch(ctx, e, aheadExecConc); err != nil && a.m.base.Err() == nil {
			a.m.log.Debug("prefetch of an executable failed", "path", e.Path(), "err", err)
		}
	}()
}

// prefetch fetches the whole of e into the block cache and counts it.
func (a *treeAhead) prefetch(ctx context.Context, e *erisfs.Entry, conc int) (int64, error) {
	n, err := a.m.tree.Prefetch(ctx, e, conc)
	if err != nil {
		return 0, err
	}
	a.m.st.aheadFiles.Add(1)
	a.m.st.aheadBytes.Add(n)
	return n, nil
}

// advance makes i the furthest file opened: what was prefetched up to it
// no longer counts against the budget.
func (a *treeAhead) advance(i int) {
	for j, n := range a.ahead {
		if j <= i {
			a.aheadBytes -= n
			delete(a.ahead, j)
		}
	}
	a.last = i
	a.next = max(a.next, i+1)
}

// fill starts fetching the next files while the budgets allow. a.mu is held.
func (a *treeAhead) fill() {
	for a.busy < aheadBusy && a.next < len(a.files) && a.next <= a.last+aheadFiles &&
		a.aheadBytes < a.budget && a.m.base.Err() == nil {
		i := a.next
		a.next++
		a.busy++
		go a.fetch(i)
	}
}

// fetch prefetches the file files[i] within a few operation deadlines.
// A failure ends the pass (the reader will meet it, and report it, itself).
func (a *treeAhead) fetch(i int) {
	e := a.files[i]
	// Background: a peer pool keeps room for the reads of whoever waits.
	ctx, cancel := context.WithTimeout(eris.Background(a.m.base), 4*a.m.opts.Deadline)
	defer cancel()
	// The size needs a round trip of its own; ask it first only when the
	// content's level allows a file too large to prefetch.
	limit := a.budget / 4
	var n int64
	var err error
	if e.Capability().MaxSize() > limit {
		n, err = a.m.tree.Size(ctx, e)
	}
	if err == nil && n <= limit {
		n, err = a.prefetch(ctx, e, aheadFileConc)
	}
	if err != nil && a.m.base.Err() == nil {
		a.m.log.Debug("tree-ahead stopped", "path", e.Path(), "err", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.busy--
	if err != nil {
		a.run = 0
		return
	}
	if i > a.last {
		a.ahead[i] = n
		a.aheadBytes += n
	}
	if a.run >= aheadTrigger {
		a.fill()
	}
}
