package cache

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"erismount/eris"
)

// Memory is a least-recently-used cache of blocks bounded in bytes, safe for
// concurrent use. It holds blocks that were verified before they were put
// (by Tiered, or by whoever calls PutBlock): it trusts the reference it is
// given and does not hash again, which is what makes a hit cheap.
//
// The byte bound counts block bytes only; each entry also costs about 150
// bytes of bookkeeping.
type Memory struct {
	mu    sync.Mutex
	lru   *simplelru.LRU[eris.Ref, []byte] // values are never modified
	max   int64
	bytes int64
}

var _ eris.BlockStore = (*Memory)(nil)

// NewMemory returns an empty cache holding at most maxBytes of blocks. A
// maxBytes of zero or less gives a cache that holds nothing.
func NewMemory(maxBytes int64) *Memory {
	m := &Memory{max: maxBytes}
	// The entry count is unbounded: the byte bound is enforced in add.
	// NewLRU only fails for a size of zero or less.
	m.lru, _ = simplelru.NewLRU[eris.Ref, []byte](math.MaxInt, func(_ eris.Ref, b []byte) {
		m.bytes -= int64(len(b)) // called with m.mu held
	})
	return m
}

// GetBlock returns a copy of the block, or an error matching
// eris.ErrNotFound. A hit makes the block the most recently used.
func (m *Memory) GetBlock(_ context.Context, ref eris.Ref) ([]byte, error) {
	b, ok := m.get(ref)
	if !ok {
		return nil, eris.NotFound(ref)
	}
	return bytes.Clone(b), nil
}

// PutBlock stores a copy of block under ref, evicting the least recently
// used blocks to stay within the bound. A block larger than the bound is
// not kept. Blocks that are not 1 KiB or 32 KiB are refused with an error
// matching eris.ErrCorrupt; the hash is not checked (see Memory).
func (m *Memory) PutBlock(_ context.Context, ref eris.Ref, block []byte) error {
	if err := checkSize(ref, block); err != nil {
		return err
	}
	m.add(ref, bytes.Clone(block))
	return nil
}

// Has reports whether ref is held, without making it recently used.
func (m *Memory) Has(ref eris.Ref) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Contains(ref)
}

// Len is the number of blocks held.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Len()
}

// Bytes is the size of the blocks held.
func (m *Memory) Bytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

// MaxBytes is the bound given to NewMemory.
func (m *Memory) MaxBytes() int64 { return m.max }

// get returns the stored slice itself: callers must not modify it.
func (m *Memory) get(ref eris.Ref) ([]byte, bool) {
	m.mu.Lock()
	b, ok := m.lru.Get(ref)
	m.mu.Unlock()
	return b, ok
}

// add stores b without copying it: the caller gives up b, which nobody may
// modify afterwards.
func (m *Memory) add(ref eris.Ref, b []byte) {
	n := int64(len(b))
	if n > m.max {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lru.Contains(ref) {
		// Same reference, same bytes: only the recency changes.
		m.lru.Get(ref)
		return
	}
	for m.bytes+n > m.max {
		m.lru.RemoveOldest()
	}
	m.lru.Add(ref, b)
	m.bytes += n
}

// checkSize refuses what cannot be an ERIS block (spec §2.1) before it is
// stored anywhere.
func checkSize(ref eris.Ref, block []byte) error {
	if !eris.ValidBlockSize(len(block)) {
		return &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w: put of %d bytes, want 1024 or 32768", eris.ErrCorrupt, len(block))}
	}
	return nil
}
