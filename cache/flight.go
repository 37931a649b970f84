package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"erismount/eris"
)

// flights merges concurrent fetches of one block: the first caller starts
// the fetch, later callers wait for the same result.
//
// It is golang.org/x/sync/singleflight's idea with one difference that
// matters for reads from FUSE: every caller can leave when its own context
// ends, and the fetch is cancelled when the last caller waiting for it has
// left, instead of running on for nobody (DoChan lets callers leave but
// cannot stop the work; Do cannot even let them leave).
type flights struct {
	mu     sync.Mutex
	calls  map[eris.Ref]*call
	closed bool
	wg     sync.WaitGroup // fetch goroutines
	merged atomic.Int64   // callers that joined a running fetch
}

type call struct {
	done    chan struct{} // closed when b and err are set
	b       []byte        // shared by all callers: read only
	err     error
	waiters int
	cancel  context.CancelFunc
}

// do returns fetch(ref)'s result, shared with concurrent callers of the
// same ref.
// The fetch runs in its own goroutine with a context that keeps the first
// caller's values, ends when base ends or when every caller has left.
func (f *flights) do(ctx, base context.Context, ref eris.Ref, fetch func(context.Context, eris.Ref) ([]byte, error)) ([]byte, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, &eris.BlockError{Ref: ref, Err: fmt.Errorf("cache: get: %w", ErrClosed)}
	}
	c, merged := f.calls[ref]
	if merged {
		f.merged.Add(1)
	} else {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(base, cancel)
		c = &call{done: make(chan struct{}), cancel: cancel}
		if f.calls == nil {
			f.calls = make(map[eris.Ref]*call)
		}
		f.calls[ref] = c
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			b, err := fetch(fctx, ref)
			stop()
			cancel()
			f.mu.Lock()
			if f.calls[ref] == c {
				delete(f.calls, ref)
			}
			c.b, c.err = b, err
			f.mu.Unlock()
			close(c.done)
		}()
	}
	c.waiters++
	f.mu.Unlock()

	select {
	case <-c.done:
		return c.b, c.err
	case <-ctx.Done():
		f.mu.Lock()
		if c.waiters--; c.waiters == 0 {
			// Nobody waits any more: stop the fetch, and let the next
			// caller start afresh rather than join a cancelled one.
			c.cancel()
			if f.calls[ref] == c {
				delete(f.calls, ref)
			}
		}
		f.mu.Unlock()
		return nil, ctx.Err()
	}
}

// close refuses new fetches and waits for those running to end (the
// caller cancels base first).
func (f *flights) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wg.Wait()
}
