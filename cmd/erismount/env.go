package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"erismount/cache"
	"erismount/cache/s3"
	"erismount/eris"
)

// defaultMemoryCache is the in-memory block cache in front of SQLite.
const defaultMemoryCache = 256 << 20

// storeRole says what a command keeps in the block store.
type storeRole int

const (
	// roleCache: a cache of blocks fetched from peers, evicted down to the
	// default quota (pins excepted).
	roleCache storeRole = iota
	// roleContent: the content of a server or publisher; never evicted.
	roleContent
)

// openStore opens the SQLite block store: --store or the default path.
func (a *app) openStore(ctx context.Context, role storeRole) (*cache.SQLite, error) {
	opts := cache.SQLiteOptions{Logger: a.log}
	switch {
	case role == roleContent:
		opts.SoftQuota = cache.Unlimited
	case a.cacheSize != "":
		n, err := parseSize(a.cacheSize)
		if err != nil {
			return nil, usageError{fmt.Errorf("--cache-size: %w", err)}
		}
		opts.SoftQuota = n
	}
	path := a.storePath
	if s3.IsURL(path) {
		return nil, usageError{errors.New("--store s3://… is where publish writes and serve reads; " +
			"this command keeps a local cache (--store FILE) and reads a bucket as a peer: --peer s3://…")}
	}
	if path == "" {
		p, err := cache.DefaultPath()
		if err != nil {
			return nil, err
		}
		path = p
	}
	return cache.OpenSQLite(path, opts)
}

// source is the block path of every reading command: memory LRU → SQLite →
// peer pool, each block verified where it enters the process (SQLite on
// reading, Tiered and the pool for peers' blocks). So trees and readers
// over a source (or a pin view of one) are opened with GetterVerifies and do
// not hash every block a second time.
type source struct {
	*cache.Tiered
	Store  *cache.SQLite
	Remote remote // nil when offline
	Memory *cache.Memory
}

var _ eris.BlockGetter = (*source)(nil)

// openSource wires the tiered store over the SQLite store and the peers.
func (a *app) openSource(ctx context.Context) (*source, error) {
	store, err := a.openStore(ctx, roleCache)
	if err != nil {
		return nil, err
	}
	rem, err := a.openRemote(ctx)
	if err != nil {
		store.Close()
		return nil, err
	}
	mem := cache.NewMemory(defaultMemoryCache)
	opts := cache.TieredOptions{Memory: mem, Disk: store, Logger: a.log}
	if rem != nil {
		opts.Remote = rem
	}
	return &source{Tiered: cache.NewTiered(opts), Store: store, Remote: rem, Memory: mem}, nil
}

// Close flushes write-backs and closes the pool and the store.
func (s *source) Close() error {
	err := s.Tiered.Close()
	if s.Remote != nil {
		err = errors.Join(err, s.Remote.Close())
	}
	return errors.Join(err, s.Store.Close())
}

// parseSize reads a byte count with an optional unit: 1024, 512K, 64MiB,
// 20G, 1.5TiB (K, M, G, T are binary, as in the rest of erismount).
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || !(f > 0) || f*float64(mult) > 1<<62 { // !(f > 0): NaN too
		return 0, fmt.Errorf("%q: want a positive size such as 20GiB", s)
	}
	return int64(f * float64(mult)), nil
}

// openURN parses a capability argument (a malformed one is a usage error)
// and opens the block source to read it.
func (a *app) openURN(ctx context.Context, urn string) (eris.ReadCapability, *source, error) {
	rc, err := parseURN(urn)
	if err != nil {
		return rc, nil, err
	}
	src, err := a.openSource(ctx)
	return rc, src, err
}
