package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"erismount/eris"
)

// Disk is the persistent tier of a Tiered store, normally *SQLite. Its
// GetBlock must verify what it reads back and report a damaged copy as
// missing (eris.ErrNotFound, with ErrDamaged if it can tell), as *SQLite
// does: Tiered does not hash disk blocks a second time. If it also has
// Flush(ctx) error, Tiered.Flush calls it.
type Disk interface {
	eris.BlockGetter
	eris.BlockPutter
}

// TieredOptions configure NewTiered. Every tier is optional.
type TieredOptions struct {
	Memory *Memory          // first tier; nil skips it
	Disk   Disk             // second tier; nil skips it
	Remote eris.BlockGetter // asked last; nil means offline
	// WriteBackQueue bounds the remote blocks waiting to be written to
	// Disk; when full, a block is not written back (counted in
	// WriteBackDropped) rather than make a reader wait. 0 means 256.
	WriteBackQueue int
	Logger         *slog.Logger // nil discards
}

// Tiered is a block store of tiers: GetBlock asks memory, then disk, then
// the remote getter, and keeps what a slower tier returned in the faster
// ones. Concurrent gets of one block share one fetch. Blocks from the
// remote are verified before they are kept or returned; writing them to
// disk happens in the background. PutBlock writes through to disk and
// memory.
//
// Tiered owns none of its tiers: Close stops its own goroutines only.
type Tiered struct {
	mem    *Memory
	disk   Disk
	remote eris.BlockGetter
	log    *slog.Logger

	flights flights
	ctx     context.Context // ends on Close: cancels fetches
	cancel  context.CancelFunc

	mu     sync.RWMutex // write-locked to close; held read-locked to send on wb
	closed bool
	wb     chan writeBack
	wbDone chan struct{}
	wbErr  error // first write-back failure since the last Flush
	wbErrs int

	// Failures that come once per block while a cause lasts (a full disk,
	// a damaged file) are logged once per episode and counted.
	wbFailing, readFailing episode

	n tieredCounters
}

var _ eris.BlockStore = (*Tiered)(nil)

type writeBack struct {
	ref     eris.Ref
	b       []byte        // read only
	barrier chan struct{} // Flush: closed when reached
}

type tieredCounters struct {
	memHits, memMisses                                  atomic.Int64
	diskHits, diskMisses, diskDamaged, diskErrors       atomic.Int64
	remoteHits, remoteMisses, remoteErrors, remoteWrong atomic.Int64
	wbDone, wbErrors, wbDropped                         atomic.Int64
}

// TieredStats are counters since NewTiered, for metrics. A get counts as
// a hit or miss in each tier it reached; a get merged into another's fetch
// counts once, in Merged.
type TieredStats struct {
	MemoryHits, MemoryMisses int64
	DiskHits, DiskMisses     int64
	DiskDamaged              int64 // of DiskMisses: a damaged copy was found and deleted
	DiskErrors               int64 // disk failures other than a miss (the remote was asked)
	RemoteHits, RemoteMisses int64
	RemoteErrors             int64 // remote failures other than a miss
	RemoteCorrupt            int64 // remote blocks that failed verification (not kept)
	Merged                   int64 // gets that waited for a fetch already running
	WriteBacks               int64 // remote blocks written to disk
	WriteBackErrors          int64
	WriteBackDropped         int64 // not written back: queue full or closing
}

// NewTiered returns a store over the tiers in opts.
func NewTiered(opts TieredOptions) *Tiered {
	if d, ok := opts.Disk.(*SQLite); ok && d == nil {
		opts.Disk = nil
	}
	if opts.WriteBackQueue <= 0 {
		opts.WriteBackQueue = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tiered{mem: opts.Memory, disk: opts.Disk, remote: opts.Remote, log: opts.Logger}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if t.disk != nil {
		t.wb = make(chan writeBack, opts.WriteBackQueue)
		t.wbDone = make(chan struct{})
		go t.writeBacks()
	}
	return t
}

// GetBlock returns the block from the fastest tier that has it, or an
// error matching eris.ErrNotFound when no tier has it. The caller owns the
// returned slice.
func (t *Tiered) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if t.mem != nil {
		if b, ok := t.mem.get(ref); ok {
			t.n.memHits.Add(1)
			if d, ok := t.disk.(*SQLite); ok {
				// Keep the disk's LRU order true for blocks hot in
				// memory, so they are not evicted from disk while in use.
				d.touch(ref)
			}
			return bytes.Clone(b), nil
		}
		t.n.memMisses.Add(1)
	}
	b, err := t.flights.do(ctx, t.ctx, ref, t.fetch)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// fetch gets a block missing from memory. Its result is shared by every
// caller merged into the fetch and kept in memory, so nobody modifies it.
func (t *Tiered) fetch(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if t.disk != nil {
		b, err := t.disk.GetBlock(ctx, ref)
		switch {
		case err == nil:
			t.readFailing.ok(t.log, "cache disk reads work again")
			t.n.diskHits.Add(1)
			t.keep(ref, b)
			return b, nil
		case errors.Is(err, eris.ErrNotFound):
			t.readFailing.ok(t.log, "cache disk reads work again")
			t.n.diskMisses.Add(1)
			if errors.Is(err, ErrDamaged) {
				t.n.diskDamaged.Add(1)
			}
		case ctx.Err() != nil:
			return nil, err
		default:
			// A failing disk should not stop reads that a peer can serve.
			t.n.diskErrors.Add(1)
			t.readFailing.fail(t.log, slog.LevelWarn, "cache disk reads fail; asking the remote (further failures are counted in metrics, not logged)", "ref", ref, "err", err)
		}
	}
	if t.remote == nil {
		return nil, &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w (not cached, and no remote to ask)", eris.ErrNotFound)}
	}
	b, err := t.remote.GetBlock(ctx, ref)
	switch {
	case errors.Is(err, eris.ErrNotFound):
		t.n.remoteMisses.Add(1)
		return nil, err
	case err != nil:
		if ctx.Err() == nil {
			t.n.remoteErrors.Add(1)
		}
		return nil, err
	}
	if err := ref.Verify(b); err != nil {
		t.n.remoteWrong.Add(1)
		t.log.Warn("remote returned a corrupt block; not kept", "ref", ref, "err", err)
		return nil, fmt.Errorf("cache: block from remote: %w", err)
	}
	t.n.remoteHits.Add(1)
	t.keep(ref, b)
	t.writeBack(ref, b)
	return b, nil
}

func (t *Tiered) keep(ref eris.Ref, b []byte) {
	if t.mem != nil {
		t.mem.add(ref, b)
	}
}

// writeBack queues b for the disk without waiting.
func (t *Tiered) writeBack(ref eris.Ref, b []byte) {
	if t.disk == nil {
		return
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		t.n.wbDropped.Add(1)
		return
	}
	select {
	case t.wb <- writeBack{ref: ref, b: b}:
	default:
		t.n.wbDropped.Add(1)
		t.log.Debug("write-back queue full; block not written to disk", "ref", ref)
	}
}

// writeBacks is the goroutine writing remote blocks to disk.
func (t *Tiered) writeBacks() {
	defer close(t.wbDone)
	for w := range t.wb {
		if w.barrier != nil {
			close(w.barrier)
			continue
		}
		if err := t.disk.PutBlock(context.Background(), w.ref, w.b); err != nil {
			t.n.wbErrors.Add(1)
			if !errors.Is(err, ErrUnavailable) { // else the store has said so itself
				t.wbFailing.fail(t.log, slog.LevelWarn, "fetched blocks are not written to the cache disk (further failures are counted in metrics, not logged)", "ref", w.ref, "err", err)
			}
			t.mu.Lock()
			if t.wbErr == nil {
				t.wbErr = err
			}
			t.wbErrs++
			t.mu.Unlock()
			continue
		}
		t.wbFailing.ok(t.log, "fetched blocks are written to the cache disk again")
		t.n.wbDone.Add(1)
	}
}

// PutBlock stores a copy of block on disk (waiting for the disk to accept
// it) and in memory. Like every eris.BlockPutter it trusts ref.
func (t *Tiered) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	if err := checkSize(ref, block); err != nil {
		return err
	}
	if t.disk == nil && t.mem == nil {
		return &eris.BlockError{Ref: ref, Err: errors.New("cache: put: no memory or disk tier to put into")}
	}
	if t.disk != nil {
		if err := t.disk.PutBlock(ctx, ref, block); err != nil {
			return err
		}
	}
	t.keep(ref, bytes.Clone(block))
	return nil
}

// Flush waits until the blocks queued for write-back have reached the disk
// and, if the disk has Flush, until it has committed them. It returns the
// first write-back failure since the previous Flush: `erismount pin` uses
// it to know that every block it fetched was kept.
func (t *Tiered) Flush(ctx context.Context) error {
	if t.disk == nil {
		return nil
	}
	barrier := make(chan struct{})
	t.mu.RLock()
	if t.closed {
		t.mu.RUnlock()
		return fmt.Errorf("cache: flush: %w", ErrClosed)
	}
	select {
	case t.wb <- writeBack{barrier: barrier}:
	case <-ctx.Done():
		t.mu.RUnlock()
		return ctx.Err()
	}
	t.mu.RUnlock()
	select {
	case <-barrier:
	case <-ctx.Done():
		return ctx.Err()
	}
	var err error
	if f, ok := t.disk.(interface{ Flush(context.Context) error }); ok {
		err = f.Flush(ctx)
	}
	t.mu.Lock()
	wbErr, n := t.wbErr, t.wbErrs
	t.wbErr, t.wbErrs = nil, 0
	t.mu.Unlock()
	if wbErr != nil {
		err = errors.Join(fmt.Errorf("cache: %d fetched blocks were not written to disk, the first: %w", n, wbErr), err)
	}
	return err
}

// Stats returns the counters.
func (t *Tiered) Stats() TieredStats {
	return TieredStats{
		MemoryHits:       t.n.memHits.Load(),
		MemoryMisses:     t.n.memMisses.Load(),
		DiskHits:         t.n.diskHits.Load(),
		DiskMisses:       t.n.diskMisses.Load(),
		DiskDamaged:      t.n.diskDamaged.Load(),
		DiskErrors:       t.n.diskErrors.Load(),
		RemoteHits:       t.n.remoteHits.Load(),
		RemoteMisses:     t.n.remoteMisses.Load(),
		RemoteErrors:     t.n.remoteErrors.Load(),
		RemoteCorrupt:    t.n.remoteWrong.Load(),
		Merged:           t.flights.merged.Load(),
		WriteBacks:       t.n.wbDone.Load(),
		WriteBackErrors:  t.n.wbErrors.Load(),
		WriteBackDropped: t.n.wbDropped.Load(),
	}
}

// Close cancels fetches in flight, writes the queued blocks back to disk
// and stops. It does not close the tiers. Gets after Close fail with
// ErrClosed, except memory hits.
func (t *Tiered) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.flights.close()
	if t.disk != nil {
		close(t.wb)
		<-t.wbDone
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.wbErr != nil {
		return fmt.Errorf("cache: close: %d fetched blocks were not written to disk, the first: %w", t.wbErrs, t.wbErr)
	}
	return nil
}
