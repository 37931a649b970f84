package cache_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"erismount/cache"
	"erismount/cache/cachetest"
	"erismount/eris"
)

var long = flag.Bool("long", false, "run the long crash test (many kill rounds)")

// childEnv makes the test binary act as a child process of a test (see
// child_test.go) instead of running tests.
const childEnv = "ERISMOUNT_CACHE_TEST_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	goleak.VerifyTestMain(m)
}

// openSQLite opens a store in a new file, closed at cleanup.
func openSQLite(t testing.TB, opts cache.SQLiteOptions) *cache.SQLite {
	t.Helper()
	s, err := cache.OpenSQLite(filepath.Join(t.TempDir(), "blocks.sqlite"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// reopen closes s and opens its file again, closed at cleanup.
func reopen(t *testing.T, s *cache.SQLite, opts cache.SQLiteOptions) *cache.SQLite {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := cache.OpenSQLite(s.Path(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

type testBlock struct {
	ref eris.Ref
	b   []byte
}

// blocks returns n distinct blocks of size bytes, from seed on.
func blocks(seed uint64, n, size int) []testBlock {
	bs := make([]testBlock, n)
	for i := range bs {
		bs[i].ref, bs[i].b = cachetest.Block(seed+uint64(i), size)
	}
	return bs
}

func putAll(t testing.TB, s eris.BlockPutter, bs []testBlock) {
	t.Helper()
	for _, b := range bs {
		if err := s.PutBlock(context.Background(), b.ref, b.b); err != nil {
			t.Fatal(err)
		}
	}
}

func flush(t testing.TB, f interface{ Flush(context.Context) error }) {
	t.Helper()
	if err := f.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func has(t testing.TB, s *cache.SQLite, ref eris.Ref) bool {
	t.Helper()
	ok, err := s.Has(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func stats(t testing.TB, s *cache.SQLite) cache.SQLiteStats {
	t.Helper()
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConformance(t *testing.T) {
	newSQLite := func(t *testing.T) *cache.SQLite { return openSQLite(t, cache.SQLiteOptions{}) }
	tiered := func(t *testing.T, opts cache.TieredOptions) eris.BlockStore {
		tr := cache.NewTiered(opts)
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	stores := []struct {
		name string
		new  func(t *testing.T) eris.BlockStore
	}{
		{"Memory", func(t *testing.T) eris.BlockStore { return cache.NewMemory(64 << 20) }},
		{"SQLite", func(t *testing.T) eris.BlockStore { return newSQLite(t) }},
		{"SQLiteSmallBatches", func(t *testing.T) eris.BlockStore {
			return openSQLite(t, cache.SQLiteOptions{MaxBatch: 3, MaxPending: 64 << 10})
		}},
		{"TieredMemoryDisk", func(t *testing.T) eris.BlockStore {
			return tiered(t, cache.TieredOptions{Memory: cache.NewMemory(64 << 20), Disk: newSQLite(t)})
		}},
		{"TieredDisk", func(t *testing.T) eris.BlockStore { return tiered(t, cache.TieredOptions{Disk: newSQLite(t)}) }},
		{"TieredMemory", func(t *testing.T) eris.BlockStore {
			return tiered(t, cache.TieredOptions{Memory: cache.NewMemory(64 << 20)})
		}},
		{"TieredTinyMemoryDisk", func(t *testing.T) eris.BlockStore {
			return tiered(t, cache.TieredOptions{Memory: cache.NewMemory(8 << 10), Disk: newSQLite(t)})
		}},
		{"PinView", func(t *testing.T) eris.BlockStore {
			s := newSQLite(t)
			p, err := s.Pin(context.Background(), "urn:test")
			if err != nil {
				t.Fatal(err)
			}
			return p.View(s)
		}},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) { cachetest.Run(t, st.new, cachetest.Options{}) })
	}
}
