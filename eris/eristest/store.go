// Package eristest provides an in-memory block store for tests: it counts
// what is fetched and has a fault hook, so a test can prove how many blocks
// a read costs or what happens when a peer lies.
//
//	s := eristest.NewStore()
//	rc, _ := eris.Encode(ctx, src, s, eris.EncodeOptions{})
//	s.Fault = func(ref eris.Ref, b []byte) ([]byte, error) { b[0] ^= 1; return b, nil }
package eristest

import (
	"context"
	"sync"
	"sync/atomic"

	"erismount/eris"
)

// Store is a map of blocks, safe for concurrent use. It does not verify
// what it is given: tests use it to plant corrupt blocks.
type Store struct {
	mu     sync.RWMutex
	blocks map[eris.Ref][]byte

	// Fault, if set, sees every GetBlock of a present block and may
	// return other bytes or an error instead.
	Fault func(ref eris.Ref, block []byte) ([]byte, error)

	gets atomic.Int64
	puts atomic.Int64
	hits atomic.Int64
}

// NewStore returns an empty Store.
func NewStore() *Store { return &Store{blocks: make(map[eris.Ref][]byte)} }

// GetBlock returns a copy of the block or an error matching eris.ErrNotFound.
func (s *Store) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	s.gets.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	b, ok := s.blocks[ref]
	s.mu.RUnlock()
	if !ok {
		return nil, eris.NotFound(ref)
	}
	s.hits.Add(1)
	b = append([]byte(nil), b...)
	if s.Fault != nil {
		return s.Fault(ref, b)
	}
	return b, nil
}

// PutBlock stores a copy of block under ref.
func (s *Store) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	s.puts.Add(1)
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.blocks[ref] = append([]byte(nil), block...)
	s.mu.Unlock()
	return nil
}

// Delete removes a block.
func (s *Store) Delete(ref eris.Ref) {
	s.mu.Lock()
	delete(s.blocks, ref)
	s.mu.Unlock()
}

// Len is the number of distinct blocks held.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.blocks)
}

// Refs returns the references of all blocks held.
func (s *Store) Refs() []eris.Ref {
	s.mu.RLock()
	defer s.mu.RUnlock()
	refs := make([]eris.Ref, 0, len(s.blocks))
	for r := range s.blocks {
		refs = append(refs, r)
	}
	return refs
}

// Gets is the number of GetBlock calls so far; Hits those that found a block.
func (s *Store) Gets() int64 { return s.gets.Load() }

// Hits is the number of GetBlock calls that found their block.
func (s *Store) Hits() int64 { return s.hits.Load() }

// Puts is the number of PutBlock calls so far.
func (s *Store) Puts() int64 { return s.puts.Load() }

// ResetCounts sets the counters to zero.
func (s *Store) ResetCounts() { s.gets.Store(0); s.puts.Store(0); s.hits.Store(0) }
