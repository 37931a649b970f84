package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"erismount/eris"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/compress"
	"erismount/narinfo/erisnar"
	"erismount/narinfo/nar"
)

// ErrNoKey means neither a Guix nor a Nix signing key was given.
var ErrNoKey = errors.New("publish: no signing key (a Guix key, a Nix key or both)")

// Item is one store item to publish.
type Item struct {
	// StorePath is the item's full store path, e.g.
	// /gnu/store/<hash>-hello-2.12.
	StorePath string
	// Path is where the item is on disk — a directory, a file or a
	// symlink, never followed; "" means StorePath itself. Ignored when Nar
	// is set.
	Path string
	// Nar, if set, is the item serialized as a nar; it is read once.
	Nar io.Reader
	// References are the store items it refers to, as base names or as
	// full store paths in the item's store, in the order given.
	References []string
	// Deriver is the derivation that built it (base name or full path);
	// "" for none.
	Deriver string
	// System is the narinfo's System field; "" for none.
	System string
}

// Options configure Items. At least one key is needed.
type Options struct {
	// Key signs the narinfos the Guix way (Signature: 1;Host;…).
	Key *narinfo.PrivateKey
	// Host is the host part of the Signature field; "" means "erismount".
	Host string
	// NixKey adds a Nix Sig to the narinfos.
	NixKey *narinfo.NixPrivateKey
	// Encode configures ERIS-FS encoding (block sizes, secrets).
	Encode erisfs.EncodeOptions
	// Nar configures the read-back of each tree.
	Nar erisnar.Options
	// NarDir, if set, receives each item's nar compressed with each of
	// Compressions, as `guix publish` lays them out:
	// <NarDir>/<compression>/<base name> (none: <NarDir>/<base name>),
	// and the narinfo's locations (after the signature) name those files
	// with their FileSize and FileHash, instead of the uncompressed
	// nar/<base name> that package subst serves. With NarDir inside the
	// narinfo directory, the whole is a static substitute cache.
	NarDir string
	// NarURL is NarDir's URL relative to the cache root (where the
	// narinfos are); "" means "nar".
	NarURL string
	// Compressions are the methods of package compress that write (none,
	// gzip, xz, zstd); nil means zstd when NarDir is set or ERISNar is.
	Compressions []string
	// CompressionLevel is passed to compress.NewWriter (0: the method's
	// default).
	CompressionLevel int
	// ERISNar also encodes the nar compressed with Compressions[0] as
	// plain ERIS content into the block store (32 KiB blocks), checks it
	// reads back to the item's nar, and signs its capability into the
	// narinfo as `ERIS-Nar: urn:eris:… <compression>`: a whole item can
	// then travel between peers at its compressed size.
	ERISNar bool
	// Concurrency is how many items are published at once; 0 means 2.
	Concurrency int
	// Done, if set, is called as each item is published, one call at a
	// time.
	Done func(Result)
	// Logger receives a line per item; nil discards.
	Logger *slog.Logger
}

// Result is one published item.
type Result struct {
	StorePath string
	// Narinfo is the signed narinfo, Info the same parsed.
	Narinfo []byte
	Info    *narinfo.Narinfo
	// Stats describe the encoded tree (zero when ERIS-FS refused it).
	Stats erisfs.EncodeStats
	// Nars are the compressed nars written into Options.NarDir.
	Nars []NarFile
	// NoERIS says why the narinfo has no ERIS field: ERIS-FS cannot
	// represent the item (an error matching erisfs.ErrUnrepresentable or
	// erisfs.ErrLimit), or the tree does not serialize back to the item's
	// nar (matching narinfo.ErrMismatch). Nil when it has one.
	NoERIS error
}

// Items publishes items, opts.Concurrency at a time: it encodes each into
// store, checks that the tree reads back from store as the item's nar, and
// returns the signed narinfos in the order of items. Blocks go to store;
// reading them back proves the store (a remote peer, say) holds them all.
// An item ERIS-FS cannot hold is no error (see Result.NoERIS); anything else
// — an unreadable item, a malformed nar, a store that fails — stops
// everything with an error naming the item.
func Items(ctx context.Context, items []Item, store eris.BlockStore, opts Options) ([]Result, error) {
	if opts.Key == nil && opts.NixKey == nil {
		return nil, ErrNoKey
	}
	if opts.Host == "" {
		opts.Host = "erismount"
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 2
	}
	if opts.NarURL == "" {
		opts.NarURL = "nar"
	}
	if len(opts.Compressions) == 0 && (opts.NarDir != "" || opts.ERISNar) {
		opts.Compressions = []string{compress.Zstd}
	}
	if opts.NarDir != "" {
		if err := os.MkdirAll(opts.NarDir, 0o755); err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
	}
	for _, c := range opts.Compressions {
		if _, err := compress.NewWriter(io.Discard, c, opts.CompressionLevel); err != nil {
			return nil, fmt.Errorf("publish: compression %q: %w", c, err)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	results := make([]Result, len(items))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	for i, it := range items {
		g.Go(func() error {
			r, err := one(gctx, it, store, opts)
			if err != nil {
				return fmt.Errorf("publish %s: %w", it.StorePath, err)
			}
			results[i] = r
			if r.NoERIS != nil {
				opts.Logger.Warn("published without ERIS", "path", r.StorePath, "reason", r.NoERIS)
			} else {
				opts.Logger.Info("published", "path", r.StorePath, "eris", r.Info.ERIS.URN(), "nar_size", r.Info.NarSize)
			}
			if opts.Done != nil {
				mu.Lock()
				opts.Done(r)
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return results, nil
}

// one publishes an item.
func one(ctx context.Context, it Item, store eris.BlockStore, opts Options) (Result, error) {
	dir, base, err := narinfo.SplitStorePath(it.StorePath)
	if err != nil {
		return Result{}, err
	}
	n := &narinfo.Narinfo{StorePath: it.StorePath, System: it.System}
	for _, r := range it.References {
		b, err := baseName(dir, r)
		if err != nil {
			return Result{}, fmt.Errorf("reference: %w", err)
		}
		n.References = append(n.References, b)
	}
	if it.Deriver != "" {
		if n.Deriver, err = baseName(dir, it.Deriver); err != nil {
			return Result{}, fmt.Errorf("deriver: %w", err)
		}
	}

	var nw *narWriter
	if len(opts.Compressions) > 0 {
		tmpDir := opts.NarDir
		if tmpDir == "" {
			tmpDir = os.TempDir()
		}
		if nw, err = newNarWriter(tmpDir, opts.Compressions, opts.CompressionLevel); err != nil {
			return Result{}, err
		}
		defer nw.abort() // whatever is not placed
	}
	var also io.Writer
	if nw != nil {
		also = nw
	}
	sum, rc, stats, noERIS, err := encode(ctx, it, store, opts.Encode, also)
	if err != nil {
		return Result{}, err
	}
	var nars []NarFile
	if nw != nil {
		sums, err := nw.finish()
		if err != nil {
			return Result{}, err
		}
		if opts.ERISNar {
			if n.ERISNar, err = encodeERISNar(ctx, nw.files[0].Name(), opts.Compressions[0], sum, store, opts.Encode.ContentSecret); err != nil {
				return Result{}, err
			}
		}
		if opts.NarDir != "" {
			if nars, err = nw.place(opts.NarDir, opts.NarURL, base, sums); err != nil {
				return Result{}, err
			}
		}
	}
	if noERIS == nil {
		noERIS, err = readBack(ctx, it.StorePath, rc, sum, store, opts.Nar)
		if err != nil {
			return Result{}, err
		}
	}
	n.NarHash, n.NarSize = sum.Hash, sum.Size
	if noERIS == nil {
		n.ERIS = rc
	} else {
		stats = erisfs.EncodeStats{}
	}
	n.Locations = []narinfo.Location{{URL: "nar/" + base, Compression: "none", FileSize: sum.Size}}
	if len(nars) > 0 {
		n.Locations = nil
		for _, f := range nars {
			n.Locations = append(n.Locations, f.Location)
		}
	}
	raw, err := sign(n, opts)
	if err != nil {
		return Result{}, err
	}
	info, err := narinfo.Parse(raw)
	if err != nil {
		return Result{}, fmt.Errorf("the narinfo written does not parse back: %w", err)
	}
	return Result{StorePath: it.StorePath, Narinfo: raw, Info: info, Stats: stats, Nars: nars, NoERIS: noERIS}, nil
}

// baseName returns the base name of a reference given as a base name or a
// full path in the store dir.
func baseName(dir, s string) (string, error) {
	if strings.HasPrefix(s, "/") {
		d, b, err := narinfo.SplitStorePath(s)
		if err != nil {
			return "", err
		}
		if d != dir {
			return "", fmt.Errorf("%w: %s is not in %s", narinfo.ErrStorePath, s, dir)
		}
		return b, nil
	}
	return s, narinfo.CheckBaseName(s)
}

// encode serializes the item as a nar once, hashing it, copying it to also
// (if not nil) and encoding the same stream with ERIS-FS. What ERIS-FS
// cannot hold is returned as noERIS (the rest of the nar is still hashed);
// every other failure is err.
func encode(ctx context.Context, it Item, store eris.BlockPutter, eo erisfs.EncodeOptions, also io.Writer) (sum nar.Sum, rc eris.ReadCapability, st erisfs.EncodeStats, noERIS, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hw := nar.NewHashingWriter(also)
	var in io.Reader
	var wg sync.WaitGroup
	var srcErr error // the check of a given nar
	pr, pw := io.Pipe()
	if it.Nar != nil {
		// A nar given is parsed on the side as well, so that its whole is
		// checked even when ERIS-FS stops reading it early.
		in = io.TeeReader(it.Nar, io.MultiWriter(hw, pw))
		wg.Go(func() {
			srcErr = check(pr)
			io.Copy(io.Discard, pr)
		})
	} else {
		path := it.Path
		if path == "" {
			path = it.StorePath
		}
		in = io.TeeReader(pr, hw)
		wg.Go(func() { pw.CloseWithError(nar.WriteFS(ctx, pw, nar.DirFS(path))) })
	}
	rc, st, err = erisfs.EncodeNar(ctx, in, store, eo)
	if errors.Is(err, erisfs.ErrUnrepresentable) || errors.Is(err, erisfs.ErrLimit) {
		noERIS, err = err, nil
	}
	if err == nil {
		_, err = io.Copy(io.Discard, in) // the rest, after what ERIS-FS refused
	}
	if it.Nar != nil {
		pw.CloseWithError(err)
	} else {
		pr.CloseWithError(err)
	}
	wg.Wait()
	if err == nil {
		err = srcErr // the walk's own errors reach EncodeNar through the pipe
	}
	if err != nil {
		return nar.Sum{}, eris.ReadCapability{}, erisfs.EncodeStats{}, nil, err
	}
	return hw.Sum(), rc, st, noERIS, nil
}

// check reads a whole nar, which package nar checks as it goes.
func check(r io.Reader) error {
	nr := nar.NewReader(r)
	for {
		_, err := nr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readBack opens the tree rc from store and serializes it as a nar: a
// MismatchError (as noERIS) when that nar is not sum, an error when the
// tree cannot be read back.
func readBack(ctx context.Context, storePath string, rc eris.ReadCapability, sum nar.Sum, store eris.BlockGetter, opts erisnar.Options) (noERIS, err error) {
	tree, err := erisfs.Open(ctx, rc, store, erisfs.OpenOptions{})
	if err != nil {
		return nil, fmt.Errorf("read the tree back: %w", err)
	}
	got, err := erisnar.Write(ctx, io.Discard, tree, opts)
	if err != nil {
		return nil, fmt.Errorf("read the tree back: %w", err)
	}
	if got != sum {
		return &narinfo.MismatchError{StorePath: storePath, Want: sum, Got: got}, nil
	}
	return nil, nil
}

// sign writes n in the ERISv4 layout with the signatures of opts.
func sign(n *narinfo.Narinfo, opts Options) ([]byte, error) {
	if opts.NixKey != nil {
		if err := n.SignNix(*opts.NixKey); err != nil {
			return nil, err
		}
	}
	if opts.Key != nil {
		return n.Sign(narinfo.ERISv4, opts.Key, opts.Host)
	}
	return n.Marshal(narinfo.ERISv4)
}

// WriteNarinfo writes r's narinfo into dir as `<hash part>.narinfo`,
// replacing any older one atomically, and returns the file's path.
func WriteNarinfo(dir string, r Result) (string, error) {
	_, base, err := narinfo.SplitStorePath(r.StorePath)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, base[:32]+".narinfo")
	tmp, err := os.CreateTemp(dir, ".narinfo-*")
	if err != nil {
		return "", err
	}
	_, err = tmp.Write(r.Narinfo)
	err = errors.Join(err, tmp.Chmod(0o644), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return path, nil
}
