package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"erismount/eris"
)

// Uploader puts blocks into a Store in the background, many at a time:
// PutBlock checks the block, queues a copy and returns; Flush waits until
// every queued block is in the bucket and reports the first failure. An
// encoder writes one block after another, and one request per block on a
// round trip of a few milliseconds would bound a publish to a few hundred
// blocks a second; with N uploads in flight it is N times that.
//
// GetBlock serves queued blocks from memory (an encoder reads back what it
// wrote), then asks the store. The Uploader does not own the store.
type Uploader struct {
	s    *Store
	jobs chan upload
	// sendMu is held read-locked while sending on jobs, write-locked to
	// close it.
	sendMu sync.RWMutex
	closed bool

	mu      sync.Mutex
	pending map[eris.Ref][]byte // queued or being sent
	idle    []chan struct{}     // Flush waiters: closed when pending is empty
	err     error               // first failure since the last Flush
	failed  int

	wg sync.WaitGroup
}

type upload struct {
	ref   eris.Ref
	block []byte
}

var _ eris.BlockStore = (*Uploader)(nil)

// NewUploader starts n upload goroutines (0 means 64) over s.
func (s *Store) NewUploader(n int) *Uploader {
	if n <= 0 {
		n = 64
	}
	u := &Uploader{s: s, jobs: make(chan upload, n), pending: make(map[eris.Ref][]byte)}
	u.wg.Add(n)
	for range n {
		go u.run()
	}
	return u
}

func (u *Uploader) run() {
	defer u.wg.Done()
	for j := range u.jobs {
		// The store's context, not the caller's: a queued block is sent
		// even though the PutBlock that queued it has returned.
		err := u.s.PutBlock(u.s.ctx, j.ref, j.block)
		u.mu.Lock()
		delete(u.pending, j.ref)
		if err != nil {
			u.failed++
			if u.err == nil {
				u.err = err
			}
		}
		if len(u.pending) == 0 {
			for _, c := range u.idle {
				close(c)
			}
			u.idle = nil
		}
		u.mu.Unlock()
	}
}

// PutBlock checks block (size, hash: eris.ErrCorrupt) and queues it. It
// returns an earlier upload's failure, so that a publish stops soon after
// the bucket goes away; the failure is reported again by Flush.
func (u *Uploader) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	if err := verifyPut(ref, block); err != nil {
		return fmt.Errorf("put block %s to %s: %w", ref.Str(), u.s.url, err)
	}
	u.sendMu.RLock()
	defer u.sendMu.RUnlock()
	if u.closed {
		return ErrClosed
	}
	u.mu.Lock()
	if err := u.err; err != nil {
		u.mu.Unlock()
		return err
	}
	if _, ok := u.pending[ref]; ok {
		u.mu.Unlock()
		return nil
	}
	if err := ctx.Err(); err != nil {
		u.mu.Unlock()
		return err
	}
	cp := bytes.Clone(block)
	u.pending[ref] = cp
	u.mu.Unlock()
	select {
	case u.jobs <- upload{ref, cp}:
		return nil
	case <-ctx.Done():
	}
	u.mu.Lock()
	delete(u.pending, ref)
	u.mu.Unlock()
	return ctx.Err()
}

// GetBlock returns a queued block, or asks the store.
func (u *Uploader) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	u.mu.Lock()
	b, ok := u.pending[ref]
	u.mu.Unlock()
	if ok {
		return bytes.Clone(b), nil
	}
	return u.s.GetBlock(ctx, ref)
}

// Flush waits until every block queued so far is in the bucket (or has
// failed) and returns the first failure since the last Flush, with the
// number of blocks that failed.
func (u *Uploader) Flush(ctx context.Context) error {
	u.mu.Lock()
	var wait chan struct{}
	if len(u.pending) > 0 {
		wait = make(chan struct{})
		u.idle = append(u.idle, wait)
	}
	u.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	err, n := u.err, u.failed
	u.err, u.failed = nil, 0
	if n > 1 {
		err = fmt.Errorf("%w (and %d more blocks failed)", err, n-1)
	}
	return err
}

// Close sends what is queued, stops the upload goroutines and returns the
// first failure not yet reported by Flush.
func (u *Uploader) Close() error {
	u.sendMu.Lock()
	if u.closed {
		u.sendMu.Unlock()
		return nil
	}
	u.closed = true
	close(u.jobs)
	u.sendMu.Unlock()
	u.wg.Wait()
	err := u.Flush(context.Background())
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: uploads cut short", ErrClosed)
	}
	return err
}
