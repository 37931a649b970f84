package testenv

import (
	"context"
	"path/filepath"
	"testing"

	"erismount/cache"
	"erismount/eris"
)

// SQLite opens (creating it) the SQLite block store at path, keeping every
// block (no quota), and closes it when the test ends.
func SQLite(t testing.TB, path string) *cache.SQLite {
	t.Helper()
	s, err := cache.OpenSQLite(path, cache.SQLiteOptions{SoftQuota: cache.Unlimited, Logger: Logger(t)})
	if err != nil {
		t.Fatalf("testenv: open block store %s: %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("testenv: close block store %s: %v", path, err)
		}
	})
	return s
}

// PublishSQLite publishes the tree at dir into the SQLite store at path
// and closes the store, so that another process may use it; it returns
// the tree's capability.
func PublishSQLite(t testing.TB, dir, path string) eris.ReadCapability {
	t.Helper()
	s, err := cache.OpenSQLite(path, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
	if err != nil {
		t.Fatalf("testenv: open block store %s: %v", path, err)
	}
	rc := Publish(t, dir, s)
	if err := s.Flush(context.Background()); err != nil {
		t.Fatalf("testenv: flush %s: %v", path, err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("testenv: close %s: %v", path, err)
	}
	return rc
}

// Cache is the block path of a mount as erismount builds it: a memory
// cache, then a new SQLite store, then the remote getter (peers).
type Cache struct {
	*cache.Tiered
	Disk *cache.SQLite
}

// NewCache returns an empty cache in front of remote, closed when the
// test ends.
func NewCache(t testing.TB, remote eris.BlockGetter) *Cache {
	t.Helper()
	disk := SQLite(t, filepath.Join(t.TempDir(), "cache.sqlite"))
	tiered := cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(64 << 20), Disk: disk, Remote: remote, Logger: Logger(t)})
	t.Cleanup(func() { tiered.Close() })
	return &Cache{Tiered: tiered, Disk: disk}
}
