package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"erismount/eris"
	"erismount/narinfo/compress"
	"erismount/narinfo/publish"
)

// publishStaticHelp is the part of publish's help about static caches.
const publishStaticHelp = `
Static caches: --nar-dir DIR also writes each item's nar, compressed with
--compression (zstd, xz, gzip or none; comma separated for several; default
zstd), as DIR/<compression>/<base name> (none: DIR/<base name>) — the layout
of "guix publish" — and the narinfo's URL / Compression / FileSize / FileHash,
after the signature, name those files. DIR must be inside --narinfo-dir, which
also gets nix-cache-info; URLs are relative to it. --eris-nar also encodes the
first compressed nar as plain ERIS content into the block store and signs its
capability into the narinfo ("ERIS-Nar: urn:eris:… zstd", above the
signature): a whole item then travels between peers at its compressed size.
Guix and Nix skip the field. --blocks-dir DIR writes every block as the file
DIR/<reference> (instead of into the store): with --narinfo-dir, --nar-dir and
--blocks-dir inside one directory, any web server, CDN or bucket serving it is
a complete substitute cache (nix-store, guix substitute) and an ERIS peer
(--peer 'https://host/blocks?layout=static').`

// staticFlags are publish's flags for static caches.
type staticFlags struct {
	narDir       string
	compressions []string
	level        int
	erisNar      bool
	blocksDir    string
}

func (f *staticFlags) add(fl *pflag.FlagSet) {
	fl.StringVar(&f.narDir, "nar-dir", "", "also write compressed nars here, as <compression>/<base name> (inside --narinfo-dir)")
	fl.StringSliceVar(&f.compressions, "compression", nil, "compression of the nars written: zstd, xz, gzip, none (comma separated; default zstd)")
	fl.IntVar(&f.level, "compression-level", 0, "compression level (zstd 1-19, xz and gzip 1-9; default: the method's)")
	fl.BoolVar(&f.erisNar, "eris-nar", false, "also encode the compressed nar as ERIS content and sign it into the narinfo as ERIS-Nar")
	fl.StringVar(&f.blocksDir, "blocks-dir", "", "write blocks as files <dir>/<reference> (the static layout) instead of into the store")
}

// active reports whether a flag that needs store items is set.
func (f *staticFlags) active() bool {
	return f.narDir != "" || len(f.compressions) > 0 || f.erisNar || f.level != 0
}

// options fills opts from the flags; narinfoDir is where the narinfos go.
func (f *staticFlags) options(narinfoDir string, opts *publish.Options) error {
	for _, c := range f.compressions {
		if _, err := compress.NewWriter(io.Discard, c, f.level); err != nil {
			return usageError{fmt.Errorf("--compression %s: %w", c, err)}
		}
	}
	if len(f.compressions) > 0 && f.narDir == "" && !f.erisNar {
		return usageError{errors.New("--compression needs --nar-dir or --eris-nar")}
	}
	opts.NarDir, opts.Compressions, opts.CompressionLevel, opts.ERISNar = f.narDir, f.compressions, f.level, f.erisNar
	if f.narDir == "" {
		return nil
	}
	if narinfoDir == "" {
		opts.NarURL = "nar"
		return nil
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	rel, err := filepath.Rel(abs(narinfoDir), abs(f.narDir))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return usageError{fmt.Errorf("--nar-dir %s must be inside --narinfo-dir %s: the narinfos' URLs are relative to it", f.narDir, narinfoDir)}
	}
	opts.NarURL = filepath.ToSlash(rel)
	return nil
}

// blockDir makes the --blocks-dir directory.
func (f *staticFlags) blockDir() (publish.BlockDir, error) {
	if err := os.MkdirAll(f.blocksDir, 0o755); err != nil {
		return publish.BlockDir{}, usageError{fmt.Errorf("--blocks-dir: %w", err)}
	}
	return publish.BlockDir{Dir: f.blocksDir}, nil
}

// teeStore stores every block in each of its stores and reads from the
// first.
type teeStore []eris.BlockStore

func (ts teeStore) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	return ts[0].GetBlock(ctx, ref)
}

func (ts teeStore) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	for _, s := range ts {
		if err := s.PutBlock(ctx, ref, block); err != nil {
			return err
		}
	}
	return nil
}
