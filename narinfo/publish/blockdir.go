package publish

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"erismount/eris"
)

// BlockDir is a block store in the static layout: each block is the file
// <Dir>/<REF>, its reference in base32 (eris.Ref.String), so that any web
// server, CDN or bucket serving Dir is an ERIS peer (`http://…/prefix
// ?layout=static` in package fetcher). It is safe for concurrent use.
type BlockDir struct {
	Dir string
}

// GetBlock reads the block ref, eris.ErrNotFound if its file is absent,
// and verifies it: a file whose bytes do not hash to its name is
// eris.ErrCorrupt. The caller owns the slice.
func (d BlockDir) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(d.Dir, ref.String()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, eris.NotFound(ref)
	}
	if err != nil {
		return nil, err
	}
	if !eris.ValidBlockSize(len(b)) || eris.RefOf(b) != ref {
		return nil, fmt.Errorf("block dir %s: file %s: %w: its bytes are another block", d.Dir, ref, eris.ErrCorrupt)
	}
	return b, nil
}

// PutBlock writes block as <Dir>/<REF>, through a temporary file renamed
// into place, so that a server never serves half a block. A block already
// there is left alone (its name is its content's hash).
func (d BlockDir) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !eris.ValidBlockSize(len(block)) {
		return &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w: put of %d bytes, want 1024 or 32768", eris.ErrCorrupt, len(block))}
	}
	path := filepath.Join(d.Dir, ref.String())
	if fi, err := os.Stat(path); err == nil && fi.Size() == int64(len(block)) {
		return nil
	}
	tmp, err := os.CreateTemp(d.Dir, ".block-*")
	if err != nil {
		return fmt.Errorf("block dir: %w", err)
	}
	_, err = tmp.Write(block)
	err = errors.Join(err, tmp.Chmod(0o644), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("block dir: write %s: %w", ref.Str(), err)
	}
	return nil
}
