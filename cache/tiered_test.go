package cache_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"erismount/cache"
	"erismount/eris"
	"erismount/eris/eristest"
)

func newTiered(t *testing.T, opts cache.TieredOptions) *cache.Tiered {
	t.Helper()
	tr := cache.NewTiered(opts)
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Error(err)
		}
	})
	return tr
}

func get(t *testing.T, g eris.BlockGetter, b testBlock) {
	t.Helper()
	got, err := g.GetBlock(context.Background(), b.ref)
	if err != nil {
		t.Fatalf("GetBlock(%s): %v", b.ref.Str(), err)
	}
	if string(got) != string(b.b) {
		t.Fatalf("GetBlock(%s) returned other bytes", b.ref.Str())
	}
}

// TestTieredTiers follows one block down the tiers and back up, counting.
func TestTieredTiers(t *testing.T) {
	ctx := context.Background()
	remote := eristest.NewStore()
	b := blocks(1, 1, eris.BlockSize32K)[0]
	putAll(t, remote, []testBlock{b})
	disk := openSQLite(t, cache.SQLiteOptions{})
	mem := cache.NewMemory(1 << 20)
	tr := newTiered(t, cache.TieredOptions{Memory: mem, Disk: disk, Remote: remote})

	get(t, tr, b) // from the remote, kept in memory, written back to disk
	flush(t, tr)
	if !mem.Has(b.ref) || !has(t, disk, b.ref) {
		t.Fatalf("after a remote hit: in memory %v, on disk %v; want both", mem.Has(b.ref), has(t, disk, b.ref))
	}
	get(t, tr, b) // from memory
	want := cache.TieredStats{MemoryHits: 1, MemoryMisses: 1, DiskMisses: 1, RemoteHits: 1, WriteBacks: 1}
	if got := tr.Stats(); got != want {
		t.Errorf("Stats = %+v\nwant    %+v", got, want)
	}
	if remote.Gets() != 1 {
		t.Errorf("remote asked %d times, want 1", remote.Gets())
	}

	// A new process: empty memory, the same disk.
	tr2 := newTiered(t, cache.TieredOptions{Memory: cache.NewMemory(1 << 20), Disk: disk, Remote: remote})
	get(t, tr2, b)
	get(t, tr2, b)
	want = cache.TieredStats{MemoryHits: 1, MemoryMisses: 1, DiskHits: 1}
	if got := tr2.Stats(); got != want {
		t.Errorf("Stats = %+v\nwant    %+v", got, want)
	}

	// Offline, and nowhere: not found.
	missing := blocks(99, 1, eris.BlockSize1K)[0]
	offline := newTiered(t, cache.TieredOptions{Memory: cache.NewMemory(1 << 20), Disk: disk})
	get(t, offline, b)
	if _, err := offline.GetBlock(ctx, missing.ref); !errors.Is(err, eris.ErrNotFound) {
		t.Errorf("offline GetBlock of a missing block: %v; want ErrNotFound", err)
	}
	if _, err := tr.GetBlock(ctx, missing.ref); !errors.Is(err, eris.ErrNotFound) {
		t.Errorf("GetBlock of a block nobody has: %v; want ErrNotFound", err)
	}
	if st := tr.Stats(); st.RemoteMisses != 1 {
		t.Errorf("RemoteMisses = %d, want 1", st.RemoteMisses)
	}
}

// TestTieredRemoteCorrupt: a remote block that does not hash to its
// reference is an ErrCorrupt error, and is kept nowhere.
func TestTieredRemoteCorrupt(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		fault func(eris.Ref, []byte) ([]byte, error)
	}{
		{"flipped bit", func(_ eris.Ref, b []byte) ([]byte, error) { b[100] ^= 1; return b, nil }},
		{"short", func(_ eris.Ref, b []byte) ([]byte, error) { return b[:1000], nil }},
		{"another block", func(_ eris.Ref, b []byte) ([]byte, error) { return blocks(7, 1, len(b))[0].b, nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			remote := eristest.NewStore()
			b := blocks(1, 1, eris.BlockSize1K)[0]
			putAll(t, remote, []testBlock{b})
			remote.Fault = tc.fault
			disk := openSQLite(t, cache.SQLiteOptions{})
			mem := cache.NewMemory(1 << 20)
			tr := newTiered(t, cache.TieredOptions{Memory: mem, Disk: disk, Remote: remote})
			got, err := tr.GetBlock(ctx, b.ref)
			if !errors.Is(err, eris.ErrCorrupt) || got != nil {
				t.Fatalf("GetBlock of a corrupt remote block: %d bytes, %v; want ErrCorrupt", len(got), err)
			}
			flush(t, tr)
			if mem.Len() != 0 || has(t, disk, b.ref) {
				t.Error("the corrupt block was kept")
			}
			if st := tr.Stats(); st.RemoteCorrupt != 1 || st.RemoteHits != 0 || st.WriteBacks != 0 {
				t.Errorf("Stats = %+v; want 1 RemoteCorrupt and nothing else from the remote", st)
			}
		})
	}
}

// TestTieredDamagedDisk: a damaged copy on disk is not returned; Tiered
// fetches the block again and the disk gets a good copy.
func TestTieredDamagedDisk(t *testing.T) {
	b := blocks(1, 1, eris.BlockSize32K)[0]
	disk := openSQLite(t, cache.SQLiteOptions{})
	putAll(t, disk, []testBlock{b})
	flush(t, disk)
	rawExec(t, rawDB(t, disk.Path()), `UPDATE data SET bytes = randomblob(32768)`)
	remote := eristest.NewStore()
	putAll(t, remote, []testBlock{b})
	tr := newTiered(t, cache.TieredOptions{Disk: disk, Remote: remote})
	get(t, tr, b)
	flush(t, tr)
	if st := tr.Stats(); st.DiskDamaged != 1 || st.DiskMisses != 1 || st.RemoteHits != 1 || st.WriteBacks != 1 {
		t.Errorf("Stats = %+v; want the damage counted and the block fetched and written back", st)
	}
	get(t, disk, b)
	if _, err := disk.Check(context.Background()); err != nil {
		t.Error(err)
	}
}

// failingDisk fails every operation with a disk error.
type failingDisk struct{}

var errDisk = errors.New("disk on fire")

func (failingDisk) GetBlock(context.Context, eris.Ref) ([]byte, error) { return nil, errDisk }
func (failingDisk) PutBlock(context.Context, eris.Ref, []byte) error   { return errDisk }

// TestTieredDiskFailure: a failing disk does not stop reads the remote
// can serve; failures are counted and reported by Flush.
func TestTieredDiskFailure(t *testing.T) {
	remote := eristest.NewStore()
	b := blocks(1, 1, eris.BlockSize1K)[0]
	putAll(t, remote, []testBlock{b})
	tr := newTiered(t, cache.TieredOptions{Disk: failingDisk{}, Remote: remote})
	get(t, tr, b)
	if err := tr.Flush(context.Background()); !errors.Is(err, errDisk) {
		t.Errorf("Flush after a failed write-back: %v; want the disk's error", err)
	}
	if err := tr.Flush(context.Background()); err != nil {
		t.Errorf("second Flush: %v; want the failure reported once", err)
	}
	if st := tr.Stats(); st.DiskErrors != 1 || st.RemoteHits != 1 || st.WriteBackErrors != 1 {
		t.Errorf("Stats = %+v", st)
	}
	if err := tr.PutBlock(context.Background(), b.ref, b.b); !errors.Is(err, errDisk) {
		t.Errorf("PutBlock onto a failing disk: %v", err)
	}
}

// gatedGetter is a remote that blocks every GetBlock until its gate opens
// or its context ends, remembering how each call ended.
type gatedGetter struct {
	store     *eristest.Store
	gate      chan struct{}
	calls     atomic.Int64
	cancelled atomic.Int64
}

func (g *gatedGetter) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	g.calls.Add(1)
	select {
	case <-g.gate:
		return g.store.GetBlock(ctx, ref)
	case <-ctx.Done():
		g.cancelled.Add(1)
		return nil, ctx.Err()
	}
}

func newGated(t *testing.T, bs []testBlock) *gatedGetter {
	g := &gatedGetter{store: eristest.NewStore(), gate: make(chan struct{})}
	putAll(t, g.store, bs)
	return g
}

// waitFor polls cond until it holds; a test that never gets there is
// ended by the test timeout, never judged by time.
func waitFor(cond func() bool) {
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}

// TestTieredMergesFetches: concurrent gets of one block cost one remote
// fetch, and every caller gets its own copy.
func TestTieredMergesFetches(t *testing.T) {
	const callers = 10
	b := blocks(1, 1, eris.BlockSize32K)[0]
	remote := newGated(t, []testBlock{b})
	tr := newTiered(t, cache.TieredOptions{Disk: openSQLite(t, cache.SQLiteOptions{}), Remote: remote})
	results := make([][]byte, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			got, err := tr.GetBlock(context.Background(), b.ref)
			if err != nil {
				t.Error(err)
			}
			results[i] = got
		})
	}
	waitFor(func() bool { return tr.Stats().Merged == callers-1 })
	close(remote.gate)
	wg.Wait()
	if n := remote.calls.Load(); n != 1 {
		t.Errorf("%d remote fetches for %d concurrent gets, want 1", n, callers)
	}
	for i, r := range results {
		if string(r) != string(b.b) {
			t.Fatalf("caller %d got other bytes", i)
		}
		if i > 0 && &r[0] == &results[0][0] {
			t.Fatalf("callers 0 and %d share one slice", i)
		}
	}
}

// TestTieredCancel: a caller whose context ends returns at once; the fetch
// goes on while another caller waits for it, and is cancelled when the
// last one has gone.
func TestTieredCancel(t *testing.T) {
	b := blocks(1, 1, eris.BlockSize1K)[0]
	remote := newGated(t, []testBlock{b})
	tr := newTiered(t, cache.TieredOptions{Memory: cache.NewMemory(1 << 20), Remote: remote})

	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { _, err := tr.GetBlock(ctx1, b.ref); errs <- err }()
	waitFor(func() bool { return remote.calls.Load() == 1 })
	go func() { _, err := tr.GetBlock(ctx2, b.ref); errs <- err }()
	waitFor(func() bool { return tr.Stats().Merged == 1 })

	cancel1()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: %v; want context.Canceled", err)
	}
	if remote.cancelled.Load() != 0 {
		t.Fatal("the fetch was cancelled while a second caller still waited")
	}
	cancel2()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("second caller: %v; want context.Canceled", err)
	}
	waitFor(func() bool { return remote.cancelled.Load() == 1 })

	// The next get starts a fresh fetch rather than joining the cancelled one.
	close(remote.gate)
	get(t, tr, b)
	if n := remote.calls.Load(); n != 2 {
		t.Errorf("%d remote fetches, want 2", n)
	}
}

// blockedDisk is a disk whose PutBlock waits until released.
type blockedDisk struct {
	*cache.SQLite
	release chan struct{}
}

func (d blockedDisk) PutBlock(ctx context.Context, ref eris.Ref, b []byte) error {
	<-d.release
	return d.SQLite.PutBlock(ctx, ref, b)
}

// TestTieredWriteBackDoesNotBlock: with the disk stuck, remote blocks are
// still returned; the write-back queue fills and further blocks are not
// written back, counted.
func TestTieredWriteBackDoesNotBlock(t *testing.T) {
	const queue = 4
	bs := blocks(1, 20, eris.BlockSize1K)
	remote := eristest.NewStore()
	putAll(t, remote, bs)
	disk := blockedDisk{SQLite: openSQLite(t, cache.SQLiteOptions{}), release: make(chan struct{})}
	tr := newTiered(t, cache.TieredOptions{Disk: disk, Remote: remote, WriteBackQueue: queue})
	for _, b := range bs {
		get(t, tr, b)
	}
	st := tr.Stats()
	// One block is held by the stuck PutBlock, queue more wait.
	if st.RemoteHits != 20 || st.WriteBackDropped < 20-queue-1 {
		t.Errorf("Stats = %+v; want 20 remote hits and at least %d write-backs dropped", st, 20-queue-1)
	}
	close(disk.release)
	flush(t, tr)
	if st := tr.Stats(); st.WriteBacks+st.WriteBackDropped != 20 {
		t.Errorf("Stats = %+v; want every block written back or dropped", st)
	}
}

func TestTieredClosed(t *testing.T) {
	ctx := context.Background()
	b := blocks(1, 1, eris.BlockSize1K)[0]
	remote := eristest.NewStore()
	putAll(t, remote, []testBlock{b})
	tr := cache.NewTiered(cache.TieredOptions{Disk: openSQLite(t, cache.SQLiteOptions{}), Remote: remote})
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.GetBlock(ctx, b.ref); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("GetBlock after Close: %v; want ErrClosed", err)
	}
	if err := tr.Flush(ctx); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Flush after Close: %v; want ErrClosed", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestTieredCloseCancelsFetches: Close ends a fetch that would never end
// by itself.
func TestTieredCloseCancelsFetches(t *testing.T) {
	b := blocks(1, 1, eris.BlockSize1K)[0]
	remote := newGated(t, []testBlock{b})
	tr := cache.NewTiered(cache.TieredOptions{Remote: remote})
	errs := make(chan error, 1)
	go func() { _, err := tr.GetBlock(context.Background(), b.ref); errs <- err }()
	waitFor(func() bool { return remote.calls.Load() == 1 })
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err == nil {
		t.Error("a get in flight at Close succeeded")
	}
}

// TestTieredConcurrent reads random blocks through all three tiers from
// many goroutines, with memory and disk small enough to evict all along
// (run with -race). Every block returned is right; the disk stays sound.
func TestTieredConcurrent(t *testing.T) {
	ctx := context.Background()
	bs := append(blocks(1, 60, eris.BlockSize32K), blocks(100, 60, eris.BlockSize1K)...)
	remote := eristest.NewStore()
	putAll(t, remote, bs)
	disk := openSQLite(t, cache.SQLiteOptions{SoftQuota: 30 * eris.BlockSize32K, MaxBatch: 8, TouchInterval: 5 * time.Millisecond})
	tr := newTiered(t, cache.TieredOptions{Memory: cache.NewMemory(10 * eris.BlockSize32K), Disk: disk, Remote: remote, WriteBackQueue: 8})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 5))
			for range 200 {
				b := bs[r.IntN(len(bs))]
				got, err := tr.GetBlock(ctx, b.ref)
				if err != nil {
					t.Error(err)
					return
				}
				if string(got) != string(b.b) {
					t.Errorf("GetBlock(%s) returned other bytes", b.ref.Str())
					return
				}
				got[0] ^= 1
			}
		})
	}
	wg.Wait()
	flush(t, tr)
	st := tr.Stats()
	if st.MemoryHits+st.MemoryMisses != 1600 || st.MemoryMisses != st.DiskHits+st.DiskMisses+st.Merged {
		t.Errorf("Stats do not add up: %+v", st)
	}
	if _, err := disk.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTieredMemoryHitsKeepDiskCopy: a block served from memory again and
// again counts as used on disk too, so the disk does not evict it while
// other blocks flow through.
func TestTieredMemoryHitsKeepDiskCopy(t *testing.T) {
	hot := blocks(1, 1, eris.BlockSize32K)[0]
	remote := eristest.NewStore()
	putAll(t, remote, []testBlock{hot})
	disk := openSQLite(t, cache.SQLiteOptions{SoftQuota: 10 * eris.BlockSize32K, TouchInterval: time.Hour})
	tr := newTiered(t, cache.TieredOptions{Memory: cache.NewMemory(1 << 20), Disk: disk, Remote: remote})
	get(t, tr, hot)
	flush(t, tr)
	for _, b := range blocks(100, 30, eris.BlockSize32K) {
		putAll(t, disk, []testBlock{b})
		get(t, tr, hot)
		flush(t, disk)
	}
	if st := tr.Stats(); st.MemoryHits != 30 {
		t.Fatalf("%d memory hits, want 30", st.MemoryHits)
	}
	if !has(t, disk, hot.ref) {
		t.Error("a block hot in memory was evicted from disk")
	}
	if st := stats(t, disk); st.Evicted != 21 {
		t.Errorf("%d blocks evicted, want 21", st.Evicted)
	}
}
