package testenv

import (
	"context"
	"sync"
	"sync/atomic"

	"erismount/eris"
)

// Fault is how a Faulty getter misbehaves.
type Fault int32

const (
	Healthy Fault = iota // pass every request to the wrapped getter
	Dead                 // answer nothing until the caller's context ends, like a peer that is gone
	Deaf                 // answer nothing until Release, ignoring the caller's context: a broken getter
	Corrupt              // flip a bit of every block, like a lying peer
	Missing              // say every block is missing
)

// Faulty wraps a block getter and misbehaves on demand (Set), so a test
// can break a peer in the middle of a read.
type Faulty struct {
	G     eris.BlockGetter
	fault atomic.Int32

	once    sync.Once
	release chan struct{}
	waiting atomic.Int64
}

// NewFaulty wraps g, healthy until Set.
func NewFaulty(g eris.BlockGetter) *Faulty {
	return &Faulty{G: g, release: make(chan struct{})}
}

// Set changes how the getter behaves from now on.
func (f *Faulty) Set(fault Fault) { f.fault.Store(int32(fault)) }

// Release lets every Deaf request return (with an error); call it in
// t.Cleanup so no goroutine stays blocked.
func (f *Faulty) Release() { f.once.Do(func() { close(f.release) }) }

// Waiting is how many requests are blocked right now (Dead or Deaf).
func (f *Faulty) Waiting() int64 { return f.waiting.Load() }

// GetBlock implements eris.BlockGetter.
func (f *Faulty) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	switch Fault(f.fault.Load()) {
	case Dead:
		f.waiting.Add(1)
		defer f.waiting.Add(-1)
		<-ctx.Done()
		return nil, &eris.BlockError{Ref: ref, Err: ctx.Err()}
	case Deaf:
		f.waiting.Add(1)
		defer f.waiting.Add(-1)
		<-f.release
		return nil, &eris.BlockError{Ref: ref, Err: context.DeadlineExceeded}
	case Missing:
		return nil, eris.NotFound(ref)
	case Corrupt:
		b, err := f.G.GetBlock(ctx, ref)
		if err == nil && len(b) > 0 {
			b[len(b)/2] ^= 0x01
		}
		return b, err
	}
	return f.G.GetBlock(ctx, ref)
}

// PutBlock stores through G when it can store, so a Faulty store can be
// served by a block server.
func (f *Faulty) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	return putThrough(ctx, f.G, ref, block)
}
