package fetcher

import (
	"context"
	"sync"
	"time"
)

// periodic runs registered functions on a ticker, in one goroutine that
// stop ends and waits for. It replaces go-coap's default PeriodicRunner,
// which starts a goroutine per connection that outlives Close by up to
// four seconds, and whose four-second tick also paces CoAP retransmissions.
type periodic struct {
	mu   sync.Mutex
	fns  map[int]func(time.Time) bool
	next int

	cancel context.CancelFunc
	done   chan struct{}
}

func newPeriodic(tick time.Duration) *periodic {
	ctx, cancel := context.WithCancel(context.Background())
	p := &periodic{fns: make(map[int]func(time.Time) bool), cancel: cancel, done: make(chan struct{})}
	go p.loop(ctx, tick)
	return p
}

func (p *periodic) loop(ctx context.Context, tick time.Duration) {
	defer close(p.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.mu.Lock()
			fns := make(map[int]func(time.Time) bool, len(p.fns))
			for k, f := range p.fns {
				fns[k] = f
			}
			p.mu.Unlock()
			for k, f := range fns {
				if !f(now) {
					p.mu.Lock()
					delete(p.fns, k)
					p.mu.Unlock()
				}
			}
		}
	}
}

// add registers f; it runs every tick until it returns false. Its
// signature is go-coap's periodic.Func.
func (p *periodic) add(f func(now time.Time) bool) {
	p.mu.Lock()
	p.fns[p.next] = f
	p.next++
	p.mu.Unlock()
}

// stop ends the loop and waits for it.
func (p *periodic) stop() {
	p.cancel()
	<-p.done
}

// workers bounds the CoAP requests a listener handles at once. go-coap
// handles the requests of one client connection one after another; the
// listener hands each to a worker instead, so that a slow store call for
// one client does not hold up the others, up to a fixed number.
type workers struct {
	ctx context.Context
	sem chan struct{}
}

func newWorkers(ctx context.Context, n int) *workers {
	return &workers{ctx: ctx, sem: make(chan struct{}, n)}
}

// run starts f on a worker, waiting for a free one; when the listener is
// stopping it calls drop instead.
func (w *workers) run(f, drop func()) {
	select {
	case w.sem <- struct{}{}:
	case <-w.ctx.Done():
		drop()
		return
	}
	go func() {
		defer func() { <-w.sem }()
		f()
	}()
}

// wait takes every worker slot, so it returns once running requests end;
// call it after ctx is cancelled.
func (w *workers) wait() {
	for range cap(w.sem) {
		w.sem <- struct{}{}
	}
}
