package narsource

import (
	"context"
	"io"
	"sync"

	"erismount/eris"
)

// Content read as one stream is fetched in chunks, several at once: each
// ReadAtContext fetches one chunk's leaves concurrently (as erisnar does
// for large files).
const (
	chunkSize   = 512 << 10
	chunksAhead = 8
)

// aheadReader reads an ERIS content from start to end, chunksAhead chunks
// ahead of its reader.
type aheadReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	chunks chan *chunk
	cur    []byte
	err    error
}

type chunk struct {
	buf  []byte
	err  error
	done chan struct{}
}

func newAheadReader(ctx context.Context, r *eris.Reader, size int64) *aheadReader {
	ctx, cancel := context.WithCancel(ctx)
	a := &aheadReader{ctx: ctx, cancel: cancel, chunks: make(chan *chunk, chunksAhead)}
	a.wg.Go(func() {
		defer close(a.chunks)
		for at := int64(0); at < size; at += chunkSize {
			c := &chunk{buf: make([]byte, min(chunkSize, size-at)), done: make(chan struct{})}
			select {
			case a.chunks <- c:
			case <-ctx.Done():
				return
			}
			a.wg.Go(func() {
				defer close(c.done)
				n, err := r.ReadAtContext(ctx, c.buf, at)
				switch {
				case n < len(c.buf) && (err == nil || err == io.EOF):
					err = io.ErrUnexpectedEOF // shorter than its size
				case err == io.EOF:
					err = nil
				}
				c.err = err
			})
		}
	})
	return a
}

func (a *aheadReader) Read(p []byte) (int, error) {
	for len(a.cur) == 0 {
		if a.err != nil {
			return 0, a.err
		}
		c, ok := <-a.chunks
		if !ok {
			a.err = io.EOF
			if err := a.ctx.Err(); err != nil {
				a.err = err // the producer stopped early
			}
			continue
		}
		<-c.done
		if c.err != nil {
			a.err = c.err
			continue
		}
		a.cur = c.buf
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// Close stops the readers and waits for them.
func (a *aheadReader) Close() error {
	a.cancel()
	for range a.chunks { // unblock the producer
	}
	a.wg.Wait()
	return nil
}
