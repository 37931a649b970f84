package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"erismount/eris"
	"erismount/narinfo"
	"erismount/narinfo/compress"
	"erismount/narinfo/nar"
)

// NarFile is a compressed nar Items wrote, and where its narinfo says it is.
type NarFile struct {
	// Path is the file on disk, <NarDir>/<compression>/<base name> (for
	// none: <NarDir>/<base name>).
	Path     string
	Location narinfo.Location
}

// narPath is the nar's path below the nar directory, `guix publish`'s
// layout: <compression>/<base name>, or <base name> for none.
func narPath(comp, base string) string {
	if comp == compress.None {
		return base
	}
	return comp + "/" + base
}

// narWriter compresses one nar stream into a temporary file per method.
type narWriter struct {
	dir   string // where the temporary files are
	comps []string
	files []*os.File
	zs    []io.WriteCloser
	sums  []*nar.HashingWriter // of the compressed bytes
	w     io.Writer
}

// newNarWriter starts a temporary file per compression in dir.
func newNarWriter(dir string, comps []string, level int) (*narWriter, error) {
	nw := &narWriter{dir: dir, comps: comps}
	var ws []io.Writer
	for _, c := range comps {
		f, err := os.CreateTemp(dir, ".nar-*")
		if err != nil {
			nw.abort()
			return nil, fmt.Errorf("compressed nar: %w", err)
		}
		nw.files = append(nw.files, f)
		h := nar.NewHashingWriter(f)
		z, err := compress.NewWriter(h, c, level)
		if err != nil {
			nw.abort()
			return nil, err
		}
		nw.sums, nw.zs = append(nw.sums, h), append(nw.zs, z)
		ws = append(ws, z)
	}
	nw.w = io.MultiWriter(ws...)
	return nw, nil
}

func (nw *narWriter) Write(p []byte) (int, error) { return nw.w.Write(p) }

// finish flushes every stream and returns the compressed sizes and hashes.
func (nw *narWriter) finish() ([]nar.Sum, error) {
	var err error
	sums := make([]nar.Sum, len(nw.zs))
	for i, z := range nw.zs {
		err = errors.Join(err, z.Close())
		sums[i] = nw.sums[i].Sum()
	}
	for _, f := range nw.files {
		err = errors.Join(err, f.Sync())
	}
	if err != nil {
		nw.abort()
		return nil, fmt.Errorf("compressed nar: %w", err)
	}
	return sums, nil
}

// abort removes the temporary files.
func (nw *narWriter) abort() {
	for _, f := range nw.files {
		f.Close()
		os.Remove(f.Name())
	}
	nw.files = nil
}

// place renames the temporary files to their names below the nar
// directory and returns them, with their locations.
func (nw *narWriter) place(narDir, urlPrefix, base string, sums []nar.Sum) ([]NarFile, error) {
	var out []NarFile
	for i, f := range nw.files {
		rel := narPath(nw.comps[i], base)
		path := filepath.Join(narDir, filepath.FromSlash(rel))
		err := errors.Join(f.Chmod(0o644), f.Close())
		if err == nil {
			err = os.MkdirAll(filepath.Dir(path), 0o755)
		}
		if err == nil {
			err = os.Rename(f.Name(), path)
		}
		if err != nil {
			nw.abort()
			return nil, fmt.Errorf("compressed nar: %w", err)
		}
		out = append(out, NarFile{Path: path, Location: narinfo.Location{
			URL: urlPrefix + "/" + rel, Compression: nw.comps[i],
			FileSize: sums[i].Size, FileHash: sums[i].Hash.String(),
		}})
	}
	nw.files = nil
	return out, nil
}

// encodeERISNar encodes the compressed nar in file as ERIS content (32 KiB
// blocks: the nar is large and read whole) into store, then reads it back
// from store, decompresses it and checks it is the item's nar, sum. A
// mismatch is an error: it would be a bug, not a property of the item.
func encodeERISNar(ctx context.Context, file, comp string, sum nar.Sum, store eris.BlockStore, secret [32]byte) (narinfo.ERISNar, error) {
	f, err := os.Open(file)
	if err != nil {
		return narinfo.ERISNar{}, err
	}
	defer f.Close()
	rc, err := eris.Encode(ctx, f, store, eris.EncodeOptions{BlockSize: eris.BlockSize32K, Secret: secret})
	if err != nil {
		return narinfo.ERISNar{}, fmt.Errorf("ERIS-Nar: encode: %w", err)
	}
	r, err := eris.NewReader(ctx, rc, store)
	if err != nil {
		return narinfo.ERISNar{}, fmt.Errorf("ERIS-Nar: read back: %w", err)
	}
	z, err := compress.NewReader(r, comp)
	if err != nil {
		return narinfo.ERISNar{}, fmt.Errorf("ERIS-Nar: read back: %w", err)
	}
	defer z.Close()
	hw := nar.NewHashingWriter(nil)
	if _, err := io.Copy(hw, z); err != nil {
		return narinfo.ERISNar{}, fmt.Errorf("ERIS-Nar: read back: %w", err)
	}
	if got := hw.Sum(); got != sum {
		return narinfo.ERISNar{}, fmt.Errorf("ERIS-Nar: read back: the nar is %s, want %s", got, sum)
	}
	return narinfo.ERISNar{Capability: rc, Compression: comp}, nil
}

// WriteCacheInfo writes <dir>/nix-cache-info, which Nix and Guix read
// before anything else from a substitute server (StoreDir must be their
// store), unless it is there already.
func WriteCacheInfo(dir, storeDir string) error {
	path := filepath.Join(dir, "nix-cache-info")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	text := "StoreDir: " + storeDir + "\nWantMassQuery: 1\nPriority: 50\n"
	return os.WriteFile(path, []byte(text), 0o644)
}
