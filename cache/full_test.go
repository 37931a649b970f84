package cache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"erismount/cache"
	"erismount/eris"
	"erismount/eris/eristest"
)

// logRecorder is a slog.Handler keeping every record, for tests that count
// log lines. It also writes them to the test log.
type logRecorder struct {
	t    testing.TB
	mu   *sync.Mutex
	recs *[]slog.Record
	done *bool
}

func newLogRecorder(t testing.TB) (*slog.Logger, *logRecorder) {
	r := &logRecorder{t: t, mu: new(sync.Mutex), recs: new([]slog.Record), done: new(bool)}
	t.Cleanup(func() {
		r.mu.Lock()
		*r.done = true
		r.mu.Unlock()
	})
	return slog.New(r), r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.recs = append(*r.recs, rec.Clone())
	if !*r.done {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
		rec.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
		r.t.Log(b.String())
	}
	return nil
}

// count returns how many records at level or above have msg in their
// message.
func (r *logRecorder) count(level slog.Level, msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range *r.recs {
		if rec.Level >= level && strings.Contains(rec.Message, msg) {
			n++
		}
	}
	return n
}

// find returns the first record with msg in its message.
func (r *logRecorder) find(msg string) (slog.Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range *r.recs {
		if strings.Contains(rec.Message, msg) {
			return rec, true
		}
	}
	return slog.Record{}, false
}

// tmpfs mounts a tmpfs of size bytes in a new directory, unmounted at
// cleanup. It needs root.
func tmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("unmount the tmpfs: %v: %s", err, out)
		}
	})
	return dir
}

// fill writes a file at path until the file system is full or max bytes.
func fill(t *testing.T, path string, max int64) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for n < max {
		k, err := f.Write(buf[:min(int64(len(buf)), max-n)])
		n += int64(k)
		if err != nil {
			break
		}
	}
	return n
}

// fileBytes is the size of the store's files: database, -wal and -shm.
func fileBytes(t testing.TB, path string) (total, wal int64) {
	t.Helper()
	for _, ext := range []string{"", "-wal", "-shm"} {
		fi, err := os.Stat(path + ext)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
		if ext == "-wal" {
			wal = fi.Size()
		}
	}
	return total, wal
}

// TestSQLiteFullDisk: with the cache on a small tmpfs that fills up, reads
// through Tiered stay correct (memory and the remote serve them), the
// failure is logged once and counted, another store opened on the full
// disk works (degraded) though a mount pin of a dead process is due to be
// dropped, a fresh store there opens in memory only, and once space is
// freed writes work again by themselves, logged once.
func TestSQLiteFullDisk(t *testing.T) {
	ctx := context.Background()
	dir := tmpfs(t, 16<<20)
	path := filepath.Join(dir, "blocks.sqlite")
	log, rec := newLogRecorder(t)
	// A mount pin of a process that will be gone when the store is next
	// opened on the full disk (start=0: the PID alone decides).
	child := exec.Command("sleep", "600")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	{
		s, err := cache.OpenSQLite(path, cache.SQLiteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		db := rawDB(t, path)
		rawExec(t, db, `INSERT INTO pins(name, owner, created) VALUES('urn:eris:STALE', ?, 0)`, fmt.Sprintf("pid=%d start=0 n=1", child.Process.Pid))
		db.Close()
	}
	// Leave about 3 MiB for the cache.
	filler := filepath.Join(dir, "filler")
	fill(t, filler, 13<<20)

	opts := cache.SQLiteOptions{Logger: log, RetryInterval: 1} // retry at once: recovery needs no waiting here
	s, err := cache.OpenSQLite(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	remote := eristest.NewStore()
	content := blocks(1, 300, eris.BlockSize32K) // 9.4 MiB, more than the room left
	putAll(t, remote, content)
	tiered := cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(64 << 20), Disk: s, Remote: remote, Logger: log})
	defer tiered.Close()
	read := func(bs []testBlock) {
		t.Helper()
		for i, b := range bs {
			got, err := tiered.GetBlock(ctx, b.ref)
			if err != nil {
				t.Fatalf("block %d: %v", i, err)
			}
			if !bytes.Equal(got, b.b) {
				t.Fatalf("block %d: wrong bytes", i)
			}
			if i%16 == 15 {
				tiered.Flush(ctx) // let the writer try: failures expected
			}
		}
		tiered.Flush(ctx)
	}
	child.Process.Kill()
	child.Wait()
	read(content[:200])
	read(content[:200]) // again: now from memory and disk
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats on a full disk: %v", err)
	}
	if !st.Degraded || st.FailedCommits+st.Refused == 0 {
		t.Fatalf("after filling the disk: %+v; want degraded, with failed writes", st)
	}
	if h := s.Health(); !h.Degraded || h.FailedCommits == 0 {
		t.Errorf("Health %+v: want degraded and failed writes counted", h)
	}
	if n := rec.count(slog.LevelWarn, "cannot be written"); n != 1 {
		t.Errorf("%d warnings that the store cannot be written; want 1", n)
	}
	if n := rec.count(slog.LevelWarn, "not written to the cache disk"); n > 1 {
		t.Errorf("%d warnings about write-backs; want at most 1", n)
	}
	if n := rec.count(slog.LevelError, ""); n != 0 {
		t.Errorf("%d ERROR lines; want none", n)
	}
	total, wal := fileBytes(t, path)
	t.Logf("on the full disk: files %d bytes, WAL %d; %d blocks stored, %d failed commits, %d refused puts",
		total, wal, st.Blocks, st.FailedCommits, st.Refused)
	if st.Blocks == 0 {
		t.Errorf("no block stored before the disk filled")
	}
	// SQLite checkpoints the WAL every 4 MiB, not only when it has filled
	// the disk: most of what is stored sits in the database file.
	if wal > 5<<20 {
		t.Errorf("WAL of %d bytes; want it checkpointed every 4 MiB", wal)
	}

	// Another store opened on the full disk, which has a stale mount pin
	// to drop (a write), opens, and serves what the file holds; so does
	// a fresh one, in memory only.
	fill(t, filepath.Join(dir, "filler2"), 16<<20)
	s2, err := cache.OpenSQLite(path, cache.SQLiteOptions{Logger: log})
	if err != nil {
		t.Fatalf("opening the store again on the full disk: %v", err)
	}
	if st2, err := s2.Stats(ctx); err == nil {
		t.Logf("second store on the full disk: %d blocks, degraded %v, memory only %v", st2.Blocks, st2.Degraded, st2.MemoryOnly)
	}
	if !s2.Health().MemoryOnly {
		stored := 0
		for _, b := range content[:200] {
			if got, err := s2.GetBlock(ctx, b.ref); err == nil {
				if !bytes.Equal(got, b.b) {
					t.Fatalf("wrong bytes from the second store")
				}
				stored++
			}
		}
		if stored != int(st.Blocks) {
			t.Errorf("the second store on the full disk reads %d blocks; the first stored %d", stored, st.Blocks)
		}
	}
	s2.Close()
	fresh, err := cache.OpenSQLite(filepath.Join(dir, "fresh", "blocks.sqlite"), cache.SQLiteOptions{Logger: log})
	if err != nil {
		t.Fatalf("opening a fresh store on the full disk: %v", err)
	}
	if h := fresh.Health(); !h.Degraded || !h.MemoryOnly {
		t.Errorf("fresh store on a full disk: %+v; want memory only", h)
	}
	if err := fresh.PutBlock(ctx, content[0].ref, content[0].b); !errors.Is(err, cache.ErrUnavailable) {
		t.Errorf("put into the memory-only store: %v; want ErrUnavailable", err)
	}
	if _, err := fresh.GetBlock(ctx, content[0].ref); !errors.Is(err, eris.ErrNotFound) {
		t.Errorf("get from the memory-only store: %v; want not found", err)
	}
	mp, err := fresh.PinMount(ctx, "urn:eris:FRESH")
	if err != nil {
		t.Fatalf("mount pin in the memory-only store: %v", err)
	}
	mp.Tag(content[0].ref)
	if pins, err := fresh.Pins(ctx); err != nil || len(pins) != 1 {
		t.Errorf("pins of the memory-only store: %+v, %v", pins, err)
	}
	// The mount works through it.
	mt := cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(1 << 20), Disk: fresh, Remote: remote, Logger: log})
	if b, err := mp.View(mt).GetBlock(ctx, content[5].ref); err != nil || !bytes.Equal(b, content[5].b) {
		t.Errorf("read through a memory-only store: %v", err)
	}
	mt.Close()
	if err := fresh.Close(); err != nil {
		t.Errorf("closing the memory-only store: %v", err)
	}

	// Space returns: the first store writes again by itself.
	os.Remove(filepath.Join(dir, "filler2"))
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	read(content[200:260])
	if err := tiered.Flush(ctx); err != nil {
		t.Fatalf("Flush after space returned: %v", err)
	}
	if h := s.Health(); h.Degraded {
		t.Errorf("still degraded after space returned: %+v", h)
	}
	for _, b := range content[200:260] {
		if !has(t, s, b.ref) {
			t.Fatalf("block read after space returned is not stored")
		}
	}
	if n := rec.count(slog.LevelInfo, "can be written again"); n != 1 {
		t.Errorf("%d lines saying the store can be written again; want 1", n)
	}
	if n := rec.count(slog.LevelWarn, "cannot be written"); n > 3 {
		t.Errorf("%d warnings that the store cannot be written (three stores); want at most 3", n)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	pins, err := s.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pins {
		if p.Name == "urn:eris:STALE" {
			t.Errorf("the stale mount pin was not dropped once writes worked: %+v", p)
		}
	}
	total, wal = fileBytes(t, path)
	t.Logf("after recovery: files %d bytes, WAL %d", total, wal)
}

// TestSQLiteFilesWithinCap: with a hard cap of a few MiB, the store's files
// — database, -wal and -shm — stay within the cap while far more than it
// is written, with eviction rather than failure.
func TestSQLiteFilesWithinCap(t *testing.T) {
	ctx := context.Background()
	dir := tmpfs(t, 32<<20)
	path := filepath.Join(dir, "blocks.sqlite")
	const hard = 5 << 20
	log, rec := newLogRecorder(t)
	s, err := cache.OpenSQLite(path, cache.SQLiteOptions{SoftQuota: 4 << 20, HardCap: hard, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var (
		mu      sync.Mutex
		maxSeen int64
		stop    = make(chan struct{})
		done    = make(chan struct{})
	)
	sample := func() {
		total, _ := fileBytes(t, path)
		mu.Lock()
		maxSeen = max(maxSeen, total)
		mu.Unlock()
	}
	go func() { // sample while the writer works, not only between batches
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				sample()
			}
		}
	}()
	mixed := append(blocks(1000, 500, eris.BlockSize32K), blocks(5000, 2000, eris.BlockSize1K)...)
	for i, b := range mixed {
		if err := s.PutBlock(ctx, b.ref, b.b); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		if i%40 == 39 {
			if err := s.Flush(ctx); err != nil {
				t.Fatalf("flush after %d: %v", i, err)
			}
			sample()
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	sample()
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total, wal := fileBytes(t, path)
	t.Logf("wrote %d bytes of blocks; holds %d blocks, %d bytes; files %d (WAL %d), largest seen %d; cap %d; %d evicted",
		15<<20+2000<<10, st.Blocks, st.Bytes, total, wal, maxSeen, hard, st.Evicted)
	if maxSeen > hard {
		t.Errorf("the files reached %d bytes; hard cap %d", maxSeen, hard)
	}
	if st.Evicted == 0 || st.FailedCommits != 0 || st.Rejected != 0 {
		t.Errorf("stats %+v: want evictions, no failed or refused writes", st)
	}
	if st.Bytes < 2<<20 {
		t.Errorf("only %d bytes of blocks kept under a %d-byte cap", st.Bytes, hard)
	}
	// The most recent blocks are there.
	for _, b := range mixed[len(mixed)-50:] {
		if !has(t, s, b.ref) {
			t.Fatalf("a block just written was evicted")
		}
	}
	if n := rec.count(slog.LevelWarn, ""); n != 0 {
		t.Errorf("%d warnings", n)
	}
}

// TestTieredWriteBackFailuresLogOnce: when pinned blocks fill the hard cap,
// every block fetched afterwards fails to be written back; that is logged
// once and counted, not logged per block.
func TestTieredWriteBackFailuresLogOnce(t *testing.T) {
	ctx := context.Background()
	log, rec := newLogRecorder(t)
	s := openSQLite(t, cache.SQLiteOptions{SoftQuota: 8 * eris.BlockSize32K, HardCap: 8 * eris.BlockSize32K, Logger: log})
	pin, err := s.Pin(ctx, "urn:eris:FULL")
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, pin.View(s), blocks(1, 8, eris.BlockSize32K))
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	remote := eristest.NewStore()
	content := blocks(100, 40, eris.BlockSize32K)
	putAll(t, remote, content)
	tiered := newTiered(t, cache.TieredOptions{Memory: cache.NewMemory(4 << 20), Disk: s, Remote: remote, Logger: log})
	for _, b := range content {
		get(t, tiered, b)
	}
	if err := tiered.Flush(ctx); !errors.Is(err, cache.ErrFull) {
		t.Errorf("Flush: %v; want ErrFull reported", err)
	}
	if st := tiered.Stats(); st.WriteBackErrors != int64(len(content)) {
		t.Errorf("%d write-back errors counted; want %d", st.WriteBackErrors, len(content))
	}
	if n := rec.count(slog.LevelWarn, ""); n != 1 {
		t.Errorf("%d warnings for %d blocks not written back; want 1", n, len(content))
	}
}

// TestMountPinOnFullDisk: a mount pin taken while the disk is full does not
// fail the mount; once space returns it is recorded with the blocks it
// tagged meanwhile.
func TestMountPinOnFullDisk(t *testing.T) {
	ctx := context.Background()
	dir := tmpfs(t, 16<<20)
	path := filepath.Join(dir, "blocks.sqlite")
	log, rec := newLogRecorder(t)
	opts := cache.SQLiteOptions{Logger: log, RetryInterval: 1}
	s := openSQLiteAt(t, path, opts)
	bs := blocks(1, 12, eris.BlockSize32K)
	putAll(t, s, bs[:4])
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Every byte taken: the next write transaction cannot grow the WAL.
	filler := filepath.Join(dir, "filler")
	fill(t, filler, 16<<20)
	pin, err := s.PinMount(ctx, "urn:eris:MOUNTED-FULL")
	if err != nil {
		t.Fatalf("PinMount on a full disk: %v", err)
	}
	if !s.Health().Degraded {
		t.Fatalf("the pin was written on a full disk; the test needs it not to be")
	}
	view := pin.View(s)
	for _, b := range bs[:4] {
		if got, err := view.GetBlock(ctx, b.ref); err != nil || !bytes.Equal(got, b.b) {
			t.Fatalf("read on a full disk: %v", err)
		}
	}
	if n := rec.count(slog.LevelWarn, "mount pin not recorded"); n != 1 {
		t.Errorf("%d warnings that the mount pin is not recorded; want 1", n)
	}
	os.Remove(filler)
	putAll(t, s, bs[4:])
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush after space returned: %v", err)
	}
	if err := s.Flush(ctx); err != nil { // the pin is recorded in the batch after recovery
		t.Fatal(err)
	}
	pins, err := s.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != 1 || !pins[0].Mount || pins[0].Tagged != 4 || pins[0].Blocks != 4 {
		t.Errorf("pins after space returned: %+v; want the mount pin with its 4 blocks", pins)
	}
	pin.Tag(bs[5].ref)
	if err := pin.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if pins, _ := s.Pins(ctx); len(pins) != 0 {
		t.Errorf("pins after Release: %+v", pins)
	}
}

// openSQLiteAt opens the store at path, closed at cleanup.
func openSQLiteAt(t *testing.T, path string, opts cache.SQLiteOptions) *cache.SQLite {
	t.Helper()
	s, err := cache.OpenSQLite(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
