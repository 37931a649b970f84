package main

import (
	"context"
	"errors"

	"erismount/cache"
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
	if role == roleContent {
		opts.SoftQuota = cache.Unlimited
	}
	path := a.storePath
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
	opts := cache.TieredOptions{Memory: cache.NewMemory(defaultMemoryCache), Disk: store, Logger: a.log}
	if rem != nil {
		opts.Remote = rem
	}
	return &source{Tiered: cache.NewTiered(opts), Store: store, Remote: rem}, nil
}

// Close flushes write-backs and closes the pool and the store.
func (s *source) Close() error {
	err := s.Tiered.Close()
	if s.Remote != nil {
		err = errors.Join(err, s.Remote.Close())
	}
	return errors.Join(err, s.Store.Close())
}
