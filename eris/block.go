package eris

import (
	"context"
	"errors"
	"fmt"
)

// Block sizes allowed by ERIS v1.0.0 (spec §2.1).
const (
	BlockSize1K  = 1024
	BlockSize32K = 32768
)

// ValidBlockSize reports whether n is an ERIS block size.
func ValidBlockSize(n int) bool { return n == BlockSize1K || n == BlockSize32K }

var (
	// ErrNotFound means a store or peer does not hold a block. It is not a
	// failure of the store: the caller may ask elsewhere.
	ErrNotFound = errors.New("block not found")
	// ErrCorrupt means bytes failed verification: a block whose hash is not
	// its reference, or content whose structure (padding, node layout, key
	// or level) violates the spec. Corrupt data is never returned.
	ErrCorrupt = errors.New("corrupt")
)

// BlockError is an error about one block, naming its reference. It wraps
// ErrNotFound, ErrCorrupt or a transport error.
type BlockError struct {
	Ref Ref
	Err error
}

func (e *BlockError) Error() string { return fmt.Sprintf("block %s: %v", e.Ref, e.Err) }
func (e *BlockError) Unwrap() error { return e.Err }

// NotFound returns an error for a missing block: it names ref and matches
// ErrNotFound with errors.Is.
func NotFound(ref Ref) error { return &BlockError{Ref: ref, Err: ErrNotFound} }

// BlockGetter fetches blocks by reference.
//
// GetBlock returns the encrypted block whose Blake2b-256 hash is ref. A
// getter that does not hold the block returns an error matching ErrNotFound
// (errors.Is); any other error is a failure of the getter itself (I/O,
// transport, cancelled context). Implementations that read bytes from
// outside the process (peers, disk) verify them with Ref.Verify before
// returning; in-memory stores of verified blocks need not. The caller owns
// the returned slice and may modify it.
type BlockGetter interface {
	GetBlock(ctx context.Context, ref Ref) ([]byte, error)
}

// backgroundKey marks a context whose fetches are speculative.
type backgroundKey struct{}

// Background returns ctx marked as speculative work (prefetching what may
// be read soon): a getter that queues requests, such as a pool of peers,
// may serve other requests first and keep room for them. The mark is a
// hint; it changes no result.
func Background(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// IsBackground reports whether ctx was marked by Background.
func IsBackground(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

// BlockPutter stores blocks. The callee must not retain block after
// PutBlock returns (copy it if needed); ref is the block's reference,
// already computed by the caller.
type BlockPutter interface {
	PutBlock(ctx context.Context, ref Ref, block []byte) error
}

// BlockStore is both.
type BlockStore interface {
	BlockGetter
	BlockPutter
}
