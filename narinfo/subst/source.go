package subst

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"erismount/narinfo"
	"erismount/narinfo/source"
)

// ErrNotFound means a Source has no narinfo for a hash part.
var ErrNotFound = errors.New("no narinfo for this store item")

// Source gives the upstream narinfo of a store item by the hash part of
// its store path (the 32 nix-base32 characters before the first dash).
type Source interface {
	// Narinfo returns the narinfo's bytes, exactly as signed, or an error
	// matching ErrNotFound.
	Narinfo(ctx context.Context, hashPart string) ([]byte, error)
}

// Dir is a Source over a directory of `<hash part>.narinfo` files, the
// layout of a binary cache (`nix copy --to file://…`) and of `erismount
// publish --narinfo-dir`. Files are read on each request, so narinfos added
// or replaced while the server runs are served at once.
type Dir string

// Narinfo reads <dir>/<hashPart>.narinfo.
func (d Dir) Narinfo(ctx context.Context, hashPart string) ([]byte, error) {
	if !source.ValidHashPart(hashPart) {
		return nil, fmt.Errorf("%w: %q is not a store path hash", ErrNotFound, hashPart)
	}
	f, err := os.Open(filepath.Join(string(d), hashPart+".narinfo"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, hashPart)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, narinfo.MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > narinfo.MaxSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", f.Name(), narinfo.MaxSize)
	}
	return raw, nil
}
