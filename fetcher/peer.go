package fetcher

import (
	"context"

	"erismount/eris"
)

// inFlight bounds the requests in flight to one peer.
type inFlight chan struct{}

// acquire takes a slot; it gives up when ctx ends or closed is closed.
func (s inFlight) acquire(ctx context.Context, closed <-chan struct{}) error {
	select {
	case s <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-closed:
		return ErrClosed
	}
}

func (s inFlight) release() { <-s }

// getVerified is the GetBlock of every peer: get's block is returned only
// once it hashes to ref, and every error names the peer.
func getVerified(ctx context.Context, url string, ref eris.Ref, get func(context.Context, eris.Ref) ([]byte, error)) ([]byte, error) {
	b, err := get(ctx, ref)
	if err == nil {
		err = ref.Verify(b)
	}
	if err != nil {
		return nil, peerErr(url, "get", ref, err)
	}
	return b, nil
}

// putNamed names the peer in a PutBlock error.
func putNamed(url string, ref eris.Ref, err error) error {
	if err != nil {
		return peerErr(url, "put", ref, err)
	}
	return nil
}
