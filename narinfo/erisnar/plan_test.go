package erisnar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"

	_ "github.com/mattn/go-sqlite3"
	"go.uber.org/goleak"

	"erismount/cache"
	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/tests/testenv"
)

// versions returns an older and a newer version of a tree: most files the
// same, some changed, added or gone, a large file changed in part.
func versions() (older, newer testenv.Spec) {
	older = testenv.Wide(3, 40, 3000)
	older["mid/a"] = testenv.Bytes(testenv.Random(1, 100<<10))
	older["mid/b"] = testenv.Bytes(testenv.Random(2, 20<<10))
	older["tiny"] = testenv.File("x")
	newer = testenv.Spec{}
	for p, n := range older {
		newer[p] = n
	}
	big := append([]byte(nil), older["big/blob"].Content...)
	copy(big[1<<20:], testenv.Random(3, 200<<10)) // some leaves differ
	newer["big/blob"] = testenv.Bytes(big)
	for i := range 10 {
		newer[fmt.Sprintf("d001/f%04d", i*3)] = testenv.Bytes(testenv.Random(uint64(5000+i), 3000))
	}
	newer["mid/b"] = testenv.Bytes(testenv.Random(4, 20<<10))
	newer["new/file"] = testenv.Bytes(testenv.Random(6, 70<<10))
	newer["new/link"] = testenv.Link("../tiny")
	delete(newer, "d002/f0007")
	return older, newer
}

// upgrade is a client cache holding an older version of a tree, the newer
// one on a remote, as a substitute of an upgrade meets them.
type upgrade struct {
	rc      eris.ReadCapability
	remote  *eristest.Store
	disk    *cache.SQLite
	tiered  *cache.Tiered
	missing map[eris.Ref]bool // blocks of the newer tree the disk lacks
	asked   *askedGetter      // the remote as the cache sees it
	want    []byte            // the newer tree's nar, written through the remote alone
}

func newUpgrade(t *testing.T) *upgrade {
	t.Helper()
	ctx := context.Background()
	older, newer := versions()
	u := &upgrade{remote: eristest.NewStore(), missing: map[eris.Ref]bool{}}
	u.rc = testenv.Publish(t, newer.WriteDir(t), u.remote)
	disk, err := cache.OpenSQLite(filepath.Join(t.TempDir(), "cache.sqlite"), cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { disk.Close() })
	u.disk = disk
	testenv.Publish(t, older.WriteDir(t), disk)
	if err := disk.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	plain, err := erisfs.Open(ctx, u.rc, u.remote, erisfs.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[eris.Ref]bool{}
	err = plain.WalkBlocks(ctx, func(ref eris.Ref, _ int) error {
		if !seen[ref] {
			seen[ref] = true
			if ok, err := disk.Has(ctx, ref); err != nil {
				return err
			} else if !ok {
				u.missing[ref] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf writeBuffer
	if _, err := Write(ctx, &buf, plain, Options{}); err != nil {
		t.Fatal(err)
	}
	u.want = buf.b
	u.asked = &askedGetter{g: u.remote, refs: map[eris.Ref]int{}}
	u.tiered = cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(64 << 20), Disk: disk, Remote: u.asked})
	t.Cleanup(func() { u.tiered.Close() })
	u.remote.ResetCounts()
	return u
}

type writeBuffer struct{ b []byte }

func (w *writeBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// TestWriteUpgrade writes the nar of a tree whose older version the cache
// holds: the same nar as through the remote alone, every block the cache
// lacks asked of the remote once, whatever the shape of the read-ahead.
func TestWriteUpgrade(t *testing.T) {
	shapes := append(options[:len(options):len(options)],
		struct {
			name string
			opts Options
		}{"window-1KiB-one-fetch", Options{FetchAhead: 1024, FetchConcurrency: 1}},
		struct {
			name string
			opts Options
		}{"no-fetch-ahead", Options{FetchAhead: -1}},
	)
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			noLeaks(t)
			u := newUpgrade(t)
			tree, err := erisfs.Open(context.Background(), u.rc, u.tiered, erisfs.OpenOptions{GetterVerifies: true})
			if err != nil {
				t.Fatal(err)
			}
			var buf writeBuffer
			if _, err := Write(context.Background(), &buf, tree, sh.opts); err != nil {
				t.Fatal(err)
			}
			if string(buf.b) != string(u.want) {
				t.Fatalf("nar of %d bytes differs from the %d written through the remote", len(buf.b), len(u.want))
			}
			// Exactly the blocks the cache lacks are asked of the remote.
			// (Rarely one twice: a get that misses memory just before a
			// fetch of the same block ends starts another, cache.Tiered.)
			asked := u.asked.asked()
			for ref := range u.missing {
				if !asked[ref] {
					t.Errorf("missing block %s never asked of the remote", ref.Str())
				}
			}
			for ref := range asked {
				if !u.missing[ref] {
					t.Errorf("block %s, which the cache holds, was asked of the remote", ref.Str())
				}
			}
			if len(u.missing) == 0 {
				t.Fatal("the test trees share every block")
			}
		})
	}
}

// TestWriteUpgradeDamagedCache: a block the cache holds damaged is fetched
// again, and the nar is whole.
func TestWriteUpgradeDamagedCache(t *testing.T) {
	u := newUpgrade(t)
	db, err := sql.Open("sqlite3", "file:"+u.disk.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(`UPDATE data SET bytes = randomblob(length(bytes)) WHERE id IN (SELECT id FROM data ORDER BY id LIMIT 50)`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 50 {
		t.Fatalf("damaged %d blocks, want 50", n)
	}
	tree, err := erisfs.Open(context.Background(), u.rc, u.tiered, erisfs.OpenOptions{GetterVerifies: true})
	if err != nil {
		t.Fatal(err)
	}
	var buf writeBuffer
	if _, err := Write(context.Background(), &buf, tree, Options{}); err != nil {
		t.Fatal(err)
	}
	if string(buf.b) != string(u.want) {
		t.Fatal("nar differs from the one written through the remote")
	}
	if n := len(u.asked.asked()); n <= len(u.missing) {
		t.Errorf("the remote was asked for %d blocks, no more than the %d missing before the damage", n, len(u.missing))
	}
}

// TestWriteUpgradeRemoteLacks: a block neither the cache nor the remote
// has fails the nar with ErrNotFound, and nothing is left running.
func TestWriteUpgradeRemoteLacks(t *testing.T) {
	noLeaks(t)
	u := newUpgrade(t)
	tree, err := erisfs.Open(context.Background(), u.rc, u.tiered, erisfs.OpenOptions{GetterVerifies: true})
	if err != nil {
		t.Fatal(err)
	}
	// Drop from the remote every block the cache lacks but the index.
	idx := map[eris.Ref]bool{}
	eris.Walk(context.Background(), u.rc, u.remote, func(ref eris.Ref, _ int) error { idx[ref] = true; return nil })
	dropped := 0
	for _, ref := range u.remote.Refs() {
		if ok, _ := u.disk.Has(context.Background(), ref); !ok && !idx[ref] {
			u.remote.Delete(ref)
			dropped++
		}
	}
	if dropped == 0 {
		t.Fatal("nothing to drop")
	}
	_, err = Write(context.Background(), io.Discard, tree, Options{})
	if !errors.Is(err, eris.ErrNotFound) {
		t.Fatalf("Write = %v, want ErrNotFound", err)
	}
}

// noLeaks checks, after the test's cleanups (which close the stores), that
// no goroutine started since is left.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// askedGetter records which blocks were asked of g.
type askedGetter struct {
	g    eris.BlockGetter
	mu   sync.Mutex
	refs map[eris.Ref]int
}

func (a *askedGetter) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	a.mu.Lock()
	a.refs[ref]++
	a.mu.Unlock()
	return a.g.GetBlock(ctx, ref)
}

func (a *askedGetter) asked() map[eris.Ref]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[eris.Ref]bool, len(a.refs))
	for ref := range a.refs {
		m[ref] = true
	}
	return m
}
