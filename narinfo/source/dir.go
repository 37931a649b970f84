package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"

	"erismount/narinfo"
)

// Options configure Dir and HTTP. Trust matters; the other zero values are
// useful.
type Options struct {
	// StoreDir is the store whose items are looked up: "/gnu/store" (the
	// default) or "/nix/store". Narinfos of other stores are untrusted.
	StoreDir string
	// Trust selects the narinfos returned; the zero value is an error.
	Trust Trust
	// Client makes HTTP's requests; nil means a client of its own.
	Client HTTPDoer
}

func (o Options) withDefaults() (Options, error) {
	if o.StoreDir == "" {
		o.StoreDir = "/gnu/store"
	}
	if _, _, err := narinfo.SplitStorePath(o.StoreDir + "/00000000000000000000000000000000-x"); err != nil {
		return o, fmt.Errorf("source: store directory %q: %w", o.StoreDir, err)
	}
	if o.Trust.IsZero() {
		return o, fmt.Errorf("source: %w", ErrNoTrust)
	}
	return o, nil
}

// Dir is a Lookup over a directory of `<hash part>.narinfo` files, the
// layout of a binary cache (`nix copy --to file://…`) and of `erismount
// publish --narinfo-dir`. Files are read on each lookup, so narinfos added
// or replaced meanwhile are seen at once. Relative Locations resolve to
// file URLs in the directory.
type Dir struct {
	path string
	base *url.URL
	opts Options
}

// NewDir returns the Lookup of the directory path.
func NewDir(path string, opts Options) (*Dir, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	return &Dir{path: abs, base: dirURL(&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}), opts: opts}, nil
}

func (d *Dir) String() string { return d.path }

// Raw returns the bytes of <dir>/<hashPart>.narinfo, unchecked, or an
// error matching ErrUnknown.
func (d *Dir) Raw(ctx context.Context, hashPart string) ([]byte, error) {
	if err := checkHashPart(hashPart, d.path); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(d.path, hashPart+".narinfo"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, unknown(hashPart, d.path)
	}
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, narinfo.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if len(raw) > narinfo.MaxSize {
		return nil, &UntrustedError{HashPart: hashPart, Origin: f.Name(), Reason: fmt.Errorf("larger than %d bytes", narinfo.MaxSize)}
	}
	return raw, nil
}

// Narinfo reads <dir>/<hashPart>.narinfo and checks it (Accept).
func (d *Dir) Narinfo(ctx context.Context, hashPart string) (*narinfo.Narinfo, error) {
	raw, err := d.Raw(ctx, hashPart)
	if err != nil {
		return nil, err
	}
	origin := filepath.Join(d.path, hashPart+".narinfo")
	n, err := Accept(raw, hashPart, d.opts.StoreDir, origin, d.opts.Trust)
	if err != nil {
		return nil, err
	}
	if err := resolve(n, d.base); err != nil {
		return nil, &UntrustedError{HashPart: hashPart, Origin: origin, Reason: err}
	}
	return n, nil
}
