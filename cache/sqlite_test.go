package cache_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver, to reach into files as another program would

	"erismount/cache"
	"erismount/eris"
)

// rawDB opens the store's file directly, closed at cleanup.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func rawExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestSQLiteReopen(t *testing.T) {
	s := openSQLite(t, cache.SQLiteOptions{})
	bs := append(blocks(1, 30, eris.BlockSize1K), blocks(100, 10, eris.BlockSize32K)...)
	putAll(t, s, bs)
	flush(t, s)
	s = reopen(t, s, cache.SQLiteOptions{})
	for _, b := range bs {
		got, err := s.GetBlock(context.Background(), b.ref)
		if err != nil || string(got) != string(b.b) {
			t.Fatalf("after reopening, GetBlock(%s) = %d bytes, %v", b.ref.Str(), len(got), err)
		}
	}
	st := stats(t, s)
	if want := int64(30*eris.BlockSize1K + 10*eris.BlockSize32K); st.Blocks != 40 || st.Bytes != want {
		t.Errorf("after reopening, Stats say %d blocks of %d bytes; want 40 of %d", st.Blocks, st.Bytes, want)
	}
}

// TestSQLiteFile checks what a new store file looks like from outside.
func TestSQLiteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "blocks.sqlite")
	s, err := cache.OpenSQLite(path, cache.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, s, blocks(1, 3, eris.BlockSize32K))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600: pins hold read capabilities", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Dir(path)); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", fi.Mode().Perm())
	}
	db := rawDB(t, path)
	for _, c := range []struct{ pragma, want string }{
		{"journal_mode", "wal"},
		{"page_size", "16384"},
		{"user_version", "3"},
		{"application_id", fmt.Sprint(0x45524953)},
		{"integrity_check", "ok"},
	} {
		var got string
		if err := db.QueryRow("PRAGMA " + c.pragma).Scan(&got); err != nil || got != c.want {
			t.Errorf("PRAGMA %s = %q, %v; want %q", c.pragma, got, err, c.want)
		}
	}
}

func TestSQLiteOpenErrors(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, path string)
		opts   cache.SQLiteOptions
		says   string
		target error
	}{
		{"a directory", func(t *testing.T, path string) { os.Mkdir(path, 0o700) }, cache.SQLiteOptions{}, "is a directory", nil},
		{"parent is a file", func(t *testing.T, path string) {
			os.Remove(filepath.Dir(path))
			os.WriteFile(filepath.Dir(path), nil, 0o600)
		}, cache.SQLiteOptions{}, "create its directory", nil},
		{"a fifo", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Skipf("cannot make a FIFO here: %v", err)
			}
		}, cache.SQLiteOptions{}, "not a regular file", nil},
		{"another program's database", func(t *testing.T, path string) {
			rawExec(t, rawDB(t, path), "CREATE TABLE accounts(id INTEGER PRIMARY KEY, name TEXT)")
		}, cache.SQLiteOptions{}, "another program", cache.ErrNotStore},
		{"another application id", func(t *testing.T, path string) {
			rawExec(t, rawDB(t, path), "PRAGMA application_id = 1234")
		}, cache.SQLiteOptions{}, "application id", cache.ErrNotStore},
		{"newer schema", func(t *testing.T, path string) {
			s, err := cache.OpenSQLite(path, cache.SQLiteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			rawExec(t, rawDB(t, path), "PRAGMA user_version = 99")
		}, cache.SQLiteOptions{}, "schema version 99", cache.ErrNewerSchema},
		{"soft quota above hard cap", nil, cache.SQLiteOptions{SoftQuota: 2 << 20, HardCap: 1 << 20}, "above hard cap", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d", "blocks.sqlite")
			os.MkdirAll(filepath.Dir(path), 0o700)
			if tc.setup != nil {
				tc.setup(t, path)
			}
			s, err := cache.OpenSQLite(path, tc.opts)
			if err == nil {
				s.Close()
				t.Fatalf("OpenSQLite succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q should name %s and say %q", err, path, tc.says)
			}
			if tc.target != nil && !errors.Is(err, tc.target) {
				t.Errorf("error %q does not match %v", err, tc.target)
			}
		})
	}
	if _, err := cache.OpenSQLite("", cache.SQLiteOptions{}); err == nil {
		t.Error("OpenSQLite of an empty path succeeded")
	}
}

func TestSQLiteDamage(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		damage string // SQL on data.bytes for the block's id
	}{
		{"flipped byte (and made text)", `UPDATE data SET bytes = zeroblob(1) || substr(bytes, 2) WHERE id = (SELECT id FROM blocks WHERE ref = ?)`},
		{"truncated", `UPDATE data SET bytes = substr(bytes, 1, 1000) WHERE id = (SELECT id FROM blocks WHERE ref = ?)`},
		{"made a number", `UPDATE data SET bytes = 42 WHERE id = (SELECT id FROM blocks WHERE ref = ?)`},
		{"other block's bytes", `UPDATE data SET bytes = (SELECT d.bytes FROM data d JOIN blocks b ON b.id = d.id WHERE b.ref != ?1 LIMIT 1) WHERE id = (SELECT id FROM blocks WHERE ref = ?1)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openSQLite(t, cache.SQLiteOptions{})
			bs := blocks(7, 2, eris.BlockSize32K)
			putAll(t, s, bs)
			flush(t, s)
			rawExec(t, rawDB(t, s.Path()), tc.damage, bs[0].ref[:])

			b, err := s.GetBlock(ctx, bs[0].ref)
			if err == nil {
				t.Fatalf("GetBlock of a damaged block returned %d bytes", len(b))
			}
			if !errors.Is(err, eris.ErrNotFound) || !errors.Is(err, cache.ErrDamaged) || !strings.Contains(err.Error(), s.Path()) {
				t.Errorf("error %q: want one matching eris.ErrNotFound and cache.ErrDamaged, naming the file", err)
			}
			flush(t, s)
			if has(t, s, bs[0].ref) {
				t.Error("the damaged block was not deleted")
			}
			if _, err := s.GetBlock(ctx, bs[1].ref); err != nil {
				t.Errorf("the undamaged block: %v", err)
			}
			st := stats(t, s)
			if st.Damaged != 1 || st.Blocks != 1 || st.Bytes != eris.BlockSize32K {
				t.Errorf("Stats: %d damaged, %d blocks of %d bytes; want 1, 1, 32768", st.Damaged, st.Blocks, st.Bytes)
			}
			// Put back, it is served again.
			putAll(t, s, bs[:1])
			if _, err := s.GetBlock(ctx, bs[0].ref); err != nil {
				t.Errorf("after putting the block back: %v", err)
			}
		})
	}
}

func TestSQLiteCheck(t *testing.T) {
	ctx := context.Background()
	s := openSQLite(t, cache.SQLiteOptions{})
	bs := blocks(1, 10, eris.BlockSize1K)
	putAll(t, s, bs)
	flush(t, s)
	db := rawDB(t, s.Path())
	rawExec(t, db, `UPDATE data SET bytes = randomblob(1024) WHERE id IN (SELECT id FROM blocks WHERE ref IN (?, ?))`, bs[3].ref[:], bs[5].ref[:])
	// A row without bytes, as a buggy or foreign writer could leave.
	rawExec(t, db, `DELETE FROM data WHERE id = (SELECT id FROM blocks WHERE ref = ?)`, bs[7].ref[:])
	res, err := s.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != 7 || res.Damaged != 2 || res.Missing != 1 {
		t.Errorf("Check = %+v; want 7 blocks, 2 damaged, 1 missing", res)
	}
	for i, b := range bs {
		if want := i != 3 && i != 5 && i != 7; has(t, s, b.ref) != want {
			t.Errorf("after Check, Has(block %d) = %v", i, !want)
		}
	}
	if res, err := s.Check(ctx); err != nil || res.Blocks != 7 || res.Damaged+res.Missing != 0 {
		t.Errorf("second Check = %+v, %v; want 7 good blocks", res, err)
	}
	// Totals that disagree with the table are reported.
	rawExec(t, db, `UPDATE totals SET bytes = bytes + 1`)
	if _, err := s.Check(ctx); err == nil || !strings.Contains(err.Error(), "totals") {
		t.Errorf("Check with wrong totals: %v", err)
	}
}

// TestSQLiteSoftQuota fills past the quota and checks that the least
// recently used blocks went, counting reads as uses.
func TestSQLiteSoftQuota(t *testing.T) {
	ctx := context.Background()
	const n = 20
	s := openSQLite(t, cache.SQLiteOptions{SoftQuota: n * eris.BlockSize32K, TouchInterval: time.Hour})
	bs := blocks(1, 30, eris.BlockSize32K)
	putAll(t, s, bs[:n])
	flush(t, s)
	for _, b := range bs[:5] { // 0..4 become the most recently used
		if _, err := s.GetBlock(ctx, b.ref); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, s) // writes the access times
	putAll(t, s, bs[n:])
	flush(t, s)
	for i, b := range bs {
		want := i < 5 || i >= 15 // 5..14 were the ten least recently used
		if got := has(t, s, b.ref); got != want {
			t.Errorf("Has(block %d) = %v, want %v", i, got, want)
		}
	}
	st := stats(t, s)
	if st.Bytes != n*eris.BlockSize32K || st.Evicted != 10 {
		t.Errorf("Stats: %d bytes, %d evicted; want %d, 10", st.Bytes, st.Evicted, n*eris.BlockSize32K)
	}
}

func TestSQLiteHardCap(t *testing.T) {
	ctx := context.Background()
	const n = 8
	opts := cache.SQLiteOptions{SoftQuota: n * eris.BlockSize32K, HardCap: n * eris.BlockSize32K}
	s := openSQLite(t, opts)
	bs := blocks(1, n+1, eris.BlockSize32K)
	pin, err := s.Pin(ctx, "urn:test:full")
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, pin.View(s), bs[:n])
	flush(t, s)

	err = s.PutBlock(ctx, bs[n].ref, bs[n].b)
	if !errors.Is(err, cache.ErrFull) || !strings.Contains(err.Error(), "hard cap") || !strings.Contains(err.Error(), s.Path()) {
		t.Fatalf("put into a store full of pinned blocks: %v; want ErrFull naming the file and the hard cap", err)
	}
	// A block already stored is not refused.
	if err := s.PutBlock(ctx, bs[0].ref, bs[0].b); err != nil {
		t.Errorf("putting a stored block again into a full store: %v", err)
	}
	if st := stats(t, s); st.Bytes > opts.HardCap || st.Rejected != 1 || st.PinnedBytes != st.Bytes {
		t.Errorf("Stats %+v: want at most %d bytes, 1 rejected, all pinned", st, opts.HardCap)
	}
	if err := s.Unpin(ctx, "urn:test:full"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBlock(ctx, bs[n].ref, bs[n].b); err != nil {
		t.Fatalf("put after unpinning: %v", err)
	}
	flush(t, s)
	if st := stats(t, s); st.Bytes > opts.HardCap || !has(t, s, bs[n].ref) || has(t, s, bs[0].ref) {
		t.Errorf("after unpinning: %d bytes (cap %d); want the new block in and the oldest out", st.Bytes, opts.HardCap)
	}
}

// TestSQLiteHardCapConcurrent puts from many goroutines into a store half
// full of pinned blocks; the cap holds at every commit (checked from a
// second connection that watches the totals) and the accounting is true.
func TestSQLiteHardCapConcurrent(t *testing.T) {
	ctx := context.Background()
	const capBlocks = 40
	opts := cache.SQLiteOptions{SoftQuota: 30 * eris.BlockSize32K, HardCap: capBlocks * eris.BlockSize32K, MaxBatch: 7}
	s := openSQLite(t, opts)
	pin, err := s.Pin(ctx, "urn:test:half")
	if err != nil {
		t.Fatal(err)
	}
	pinned := blocks(1, capBlocks/2, eris.BlockSize32K)
	putAll(t, pin.View(s), pinned)
	flush(t, s)

	db := rawDB(t, s.Path())
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			var bytes int64
			if err := db.QueryRow("SELECT bytes FROM totals").Scan(&bytes); err != nil {
				t.Error(err)
				return
			}
			if bytes > opts.HardCap {
				t.Errorf("%d bytes stored, above the hard cap %d", bytes, opts.HardCap)
				return
			}
		}
	})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for _, b := range blocks(uint64(1000*(w+1)), 50, eris.BlockSize32K) {
				if err := s.PutBlock(ctx, b.ref, b.b); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	flush(t, s)
	close(stop)
	watch.Wait()
	for _, b := range pinned {
		if !has(t, s, b.ref) {
			t.Fatalf("pinned block %s was evicted", b.ref.Str())
		}
	}
	if _, err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if st := stats(t, s); st.Bytes > opts.SoftQuota {
		t.Errorf("%d bytes after the writes, above the soft quota %d", st.Bytes, opts.SoftQuota)
	}
}

// TestSQLiteAccessTimesBatched reads many times and shows the reads cost
// no transaction until the access times are written in one.
func TestSQLiteAccessTimesBatched(t *testing.T) {
	ctx := context.Background()
	s := openSQLite(t, cache.SQLiteOptions{TouchInterval: time.Hour})
	bs := blocks(1, 10, eris.BlockSize1K)
	putAll(t, s, bs)
	flush(t, s)
	before := stats(t, s).Commits
	for range 100 {
		for _, b := range bs {
			if _, err := s.GetBlock(ctx, b.ref); err != nil {
				t.Fatal(err)
			}
		}
	}
	if c := stats(t, s).Commits; c != before {
		t.Errorf("1000 reads made %d transactions", c-before)
	}
	flush(t, s)
	if c := stats(t, s).Commits; c != before+1 {
		t.Errorf("Flush wrote the access times in %d transactions, want 1", c-before)
	}
}

// TestSQLiteBatching holds the write lock from another connection while
// blocks are put, so the writer finds them all queued when it gets the
// lock: they must go in as few transactions as MaxBatch allows.
func TestSQLiteBatching(t *testing.T) {
	const n, batch = 1000, 100
	s := openSQLite(t, cache.SQLiteOptions{MaxBatch: batch})
	db := rawDB(t, s.Path())
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	putAll(t, s, blocks(1, n, eris.BlockSize1K))
	if _, err := conn.ExecContext(context.Background(), "COMMIT"); err != nil {
		t.Fatal(err)
	}
	flush(t, s)
	st := stats(t, s)
	// The writer may have taken the first put alone before it blocked, and
	// Flush adds one transaction for its barrier at most.
	if st.Blocks != n || st.Commits > n/batch+2 {
		t.Errorf("%d blocks in %d transactions; want %d in at most %d", st.Blocks, st.Commits, n, n/batch+2)
	}
}

// TestSQLiteConcurrent gets, puts, deletes and evicts from many goroutines
// (run with -race). Every block returned is right; afterwards the file is
// consistent and within its quota.
func TestSQLiteConcurrent(t *testing.T) {
	ctx := context.Background()
	opts := cache.SQLiteOptions{SoftQuota: 40 * eris.BlockSize32K, MaxBatch: 16, MaxPending: 1 << 20, TouchInterval: 5 * time.Millisecond}
	s := openSQLite(t, opts)
	bs := blocks(1, 120, eris.BlockSize32K)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for range 300 {
				b := bs[r.IntN(len(bs))]
				var err error
				switch k := r.IntN(10); {
				case k < 4:
					err = s.PutBlock(ctx, b.ref, b.b)
				case k < 9:
					var got []byte
					got, err = s.GetBlock(ctx, b.ref)
					if err == nil && string(got) != string(b.b) {
						err = fmt.Errorf("GetBlock(%s) returned other bytes", b.ref.Str())
					}
					if errors.Is(err, eris.ErrNotFound) {
						err = nil
					}
				default:
					err = s.Delete(ctx, b.ref)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	flush(t, s)
	res, err := s.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := stats(t, s)
	if res.Damaged != 0 || res.Bytes != st.Bytes || st.Bytes > opts.SoftQuota {
		t.Errorf("Check %+v, Stats %d bytes: want no damage, equal sizes, within %d", res, st.Bytes, opts.SoftQuota)
	}
}

func TestSQLiteDelete(t *testing.T) {
	ctx := context.Background()
	s := openSQLite(t, cache.SQLiteOptions{})
	bs := blocks(1, 3, eris.BlockSize1K)
	putAll(t, s, bs)
	// Delete of a block still waiting to be committed, of a committed one,
	// and of one never stored.
	if err := s.Delete(ctx, bs[0].ref); err != nil {
		t.Fatal(err)
	}
	flush(t, s)
	for _, ref := range []eris.Ref{bs[1].ref, blocks(99, 1, eris.BlockSize1K)[0].ref} {
		if err := s.Delete(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range bs {
		_, err := s.GetBlock(ctx, b.ref)
		if gone := errors.Is(err, eris.ErrNotFound); gone != (i < 2) {
			t.Errorf("after Delete, GetBlock(block %d): %v", i, err)
		}
	}
	if st := stats(t, s); st.Blocks != 1 || st.Bytes != eris.BlockSize1K {
		t.Errorf("Stats: %d blocks of %d bytes, want 1 of 1024", st.Blocks, st.Bytes)
	}
}

// TestSQLiteSharedFile has two stores on one file, as a mount and an
// `erismount pin` would: both write, and sizes and ids stay right.
func TestSQLiteSharedFile(t *testing.T) {
	ctx := context.Background()
	a := openSQLite(t, cache.SQLiteOptions{})
	b, err := cache.OpenSQLite(a.Path(), cache.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	bs := blocks(1, 200, eris.BlockSize1K)
	var wg sync.WaitGroup
	wg.Go(func() { putAll(t, a, bs[:120]); flush(t, a) })
	wg.Go(func() { putAll(t, b, bs[80:]); flush(t, b) })
	wg.Wait()
	for _, blk := range bs {
		for _, s := range []*cache.SQLite{a, b} {
			if got, err := s.GetBlock(ctx, blk.ref); err != nil || string(got) != string(blk.b) {
				t.Fatalf("GetBlock(%s) = %d bytes, %v", blk.ref.Str(), len(got), err)
			}
		}
	}
	if _, err := a.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if st := stats(t, b); st.Blocks != 200 || st.Bytes != 200*eris.BlockSize1K {
		t.Errorf("Stats: %d blocks of %d bytes; want 200 of %d", st.Blocks, st.Bytes, 200*eris.BlockSize1K)
	}
}

// TestSQLiteAccounting applies random puts, deletes and evictions over
// several restarts; the totals always match a recount (Check) and Stats.
func TestSQLiteAccounting(t *testing.T) {
	ctx := context.Background()
	opts := cache.SQLiteOptions{SoftQuota: 30 * eris.BlockSize32K, MaxBatch: 5}
	s := openSQLite(t, opts)
	bs := append(blocks(1, 40, eris.BlockSize32K), blocks(100, 40, eris.BlockSize1K)...)
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 4 {
		for range 100 {
			b := bs[r.IntN(len(bs))]
			var err error
			if r.IntN(4) == 0 {
				err = s.Delete(ctx, b.ref)
			} else {
				err = s.PutBlock(ctx, b.ref, b.b)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if round%2 == 0 {
			flush(t, s)
		}
		s = reopen(t, s, opts) // Close commits what was accepted
		res, err := s.Check(ctx)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if st := stats(t, s); st.Blocks != res.Blocks || st.Bytes != res.Bytes || st.Bytes > opts.SoftQuota {
			t.Fatalf("round %d: Stats %d blocks of %d bytes, Check %d of %d, quota %d", round, st.Blocks, st.Bytes, res.Blocks, res.Bytes, opts.SoftQuota)
		}
	}
}

func TestSQLiteClosed(t *testing.T) {
	ctx := context.Background()
	s, err := cache.OpenSQLite(filepath.Join(t.TempDir(), "b.sqlite"), cache.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := blocks(1, 1, eris.BlockSize1K)[0]
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, getErr := s.GetBlock(ctx, b.ref)
	_, hasErr := s.Has(ctx, b.ref)
	for name, err := range map[string]error{
		"GetBlock": getErr,
		"Has":      hasErr,
		"PutBlock": s.PutBlock(ctx, b.ref, b.b),
		"Delete":   s.Delete(ctx, b.ref),
		"Flush":    s.Flush(ctx),
	} {
		if !errors.Is(err, cache.ErrClosed) {
			t.Errorf("%s after Close: %v; want ErrClosed", name, err)
		}
	}
	if _, err := s.Pin(ctx, "urn:x"); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Pin after Close: %v; want ErrClosed", err)
	}
}

// TestSQLitePutWaitsForRoom: with MaxPending reached, PutBlock waits for
// the writer and honours its context meanwhile.
func TestSQLitePutWaitsForRoom(t *testing.T) {
	s := openSQLite(t, cache.SQLiteOptions{MaxPending: 2 * eris.BlockSize32K})
	db := rawDB(t, s.Path())
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil { // the writer cannot commit
		t.Fatal(err)
	}
	bs := blocks(1, 3, eris.BlockSize32K)
	putAll(t, s, bs[:2])
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.PutBlock(ctx, bs[2].ref, bs[2].b); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("PutBlock beyond MaxPending while the writer is blocked: %v; want it to wait until its deadline", err)
	}
	if _, err := conn.ExecContext(context.Background(), "COMMIT"); err != nil {
		t.Fatal(err)
	}
	putAll(t, s, bs[2:])
	flush(t, s)
	if st := stats(t, s); st.Blocks != 3 {
		t.Errorf("%d blocks stored, want 3", st.Blocks)
	}
}

func TestDefaultPath(t *testing.T) {
	tests := []struct {
		name, xdg, home, want string
	}{
		{"XDG_CACHE_HOME", "/x/cache", "/home/u", "/x/cache/erismount/blocks.sqlite"},
		{"unset", "", "/home/u", "/home/u/.cache/erismount/blocks.sqlite"},
		{"relative is ignored", "rel/cache", "/home/u", "/home/u/.cache/erismount/blocks.sqlite"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("XDG_CACHE_HOME", tc.xdg)
			t.Setenv("HOME", tc.home)
			got, err := cache.DefaultPath()
			if err != nil || got != tc.want {
				t.Errorf("DefaultPath() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("no home", func(t *testing.T) {
		t.Setenv("XDG_CACHE_HOME", "")
		t.Setenv("HOME", "")
		if got, err := cache.DefaultPath(); err == nil {
			t.Errorf("DefaultPath() = %q with neither XDG_CACHE_HOME nor HOME", got)
		}
	})
}

// TestSQLiteOddPath: characters that mean something in an SQLite URI are
// taken literally in a path.
func TestSQLiteOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "we?ird#na%20me&x=1")
	path := filepath.Join(dir, "blocks.sqlite")
	s, err := cache.OpenSQLite(path, cache.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, s, blocks(1, 1, eris.BlockSize1K))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 || entries[0].Name() != "blocks.sqlite" {
		t.Errorf("directory %s holds %v (%v); want just blocks.sqlite", dir, entries, err)
	}
}
