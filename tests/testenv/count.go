package testenv

import (
	"context"
	"errors"
	"sync"

	"erismount/eris"
	"erismount/eris/eristest"
)

// Counting is a block getter that counts what it serves from G: blocks,
// bytes and which references. Put it under a block server to make a
// counting peer, or in front of a store to see what a read costs.
type Counting struct {
	G eris.BlockGetter

	mu     sync.Mutex
	blocks int64
	bytes  int64
	refs   map[eris.Ref]int
}

// NewCounting counts what g serves.
func NewCounting(g eris.BlockGetter) *Counting {
	return &Counting{G: g, refs: make(map[eris.Ref]int)}
}

// GetBlock gets the block from G, counting it if it was found.
func (c *Counting) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	b, err := c.G.GetBlock(ctx, ref)
	if err == nil {
		c.mu.Lock()
		c.blocks++
		c.bytes += int64(len(b))
		c.refs[ref]++
		c.mu.Unlock()
	}
	return b, err
}

// PutBlock stores through G when it can store, so a Counting store can
// also be published into.
func (c *Counting) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	return putThrough(ctx, c.G, ref, block)
}

// errCannotStore is what PutBlock says when the wrapped getter cannot
// store.
var errCannotStore = errors.New("testenv: the wrapped block getter cannot store")

// putThrough stores block in g if g can store.
func putThrough(ctx context.Context, g eris.BlockGetter, ref eris.Ref, block []byte) error {
	p, ok := g.(eris.BlockPutter)
	if !ok {
		return errCannotStore
	}
	return p.PutBlock(ctx, ref, block)
}

// Blocks is how many blocks were served, repeats included.
func (c *Counting) Blocks() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blocks
}

// Bytes is how many bytes were served, repeats included.
func (c *Counting) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Refs returns the distinct references served and how often each was.
func (c *Counting) Refs() map[eris.Ref]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[eris.Ref]int, len(c.refs))
	for r, n := range c.refs {
		m[r] = n
	}
	return m
}

// Reset sets every count to zero.
func (c *Counting) Reset() {
	c.mu.Lock()
	c.blocks, c.bytes = 0, 0
	c.refs = make(map[eris.Ref]int)
	c.mu.Unlock()
}

// ContentRefs returns every block reference of the content rc (internal nodes and
// leaves), walking it through g.
func ContentRefs(ctx context.Context, rc eris.ReadCapability, g eris.BlockGetter) (map[eris.Ref]bool, error) {
	refs := make(map[eris.Ref]bool)
	err := eris.Walk(ctx, rc, g, func(ref eris.Ref, _ int) error {
		refs[ref] = true
		return nil
	})
	return refs, err
}

// Local is an in-memory store with Has, as fusefs.Options.Local wants; it
// stands in for the SQLite cache where that is not under test.
type Local struct{ *eristest.Store }

// NewLocal returns an empty Local.
func NewLocal() Local { return Local{eristest.NewStore()} }

// Has reports whether the store holds ref.
func (l Local) Has(ctx context.Context, ref eris.Ref) (bool, error) {
	_, err := l.Store.GetBlock(ctx, ref)
	if errors.Is(err, eris.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Keeping is a getter that keeps a copy of every block it gets from
// Remote in Local, as a cache in front of peers does.
type Keeping struct {
	Remote eris.BlockGetter
	Local  eris.BlockStore
}

// GetBlock answers from Local, else from Remote, keeping what it got once
// it is verified.
func (k Keeping) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if b, err := k.Local.GetBlock(ctx, ref); err == nil {
		return b, nil
	}
	b, err := k.Remote.GetBlock(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := ref.Verify(b); err != nil {
		return nil, err
	}
	if err := k.Local.PutBlock(ctx, ref, b); err != nil {
		return nil, err
	}
	return b, nil
}
