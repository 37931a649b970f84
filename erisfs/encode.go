package erisfs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sync/errgroup"

	"erismount/eris"
)

// EncodeOptions configure encoding. The zero value encodes public,
// deduplicating trees: the null convergence secret, block sizes chosen per
// file as ERIS recommends (1 KiB below 16 KiB, 32 KiB from 16 KiB on),
// unrepresentable entries refused, default limits.
//
// The ERIS-FS text does not fix block size or secret for contents or index;
// the ERIS recommendation and the null secret are our choice, and they are
// what makes identical files of different trees share blocks.
type EncodeOptions struct {
	// ContentBlockSize is the block size of every file's content: 1024,
	// 32768, or 0 for the recommendation per file.
	ContentBlockSize int
	// ContentSecret is the convergence secret of file contents.
	ContentSecret [32]byte
	// IndexBlockSize is the block size of the index: 1024, 32768, or 0
	// for the recommendation.
	IndexBlockSize int
	// IndexSecret is the convergence secret of the index.
	IndexSecret [32]byte
	// DropUnrepresentable leaves out, with a warning through Logger, what
	// ERIS-FS cannot hold (empty directories below the root, devices,
	// sockets, FIFOs, names or symlink targets that are not UTF-8). By
	// default the first one is an error naming its path.
	DropUnrepresentable bool
	// Logger receives the warnings; nil discards them.
	Logger *slog.Logger
	// Limits bound the tree; an index this package would refuse to open
	// is never produced.
	Limits Limits
	// Concurrency is the number of files encoded at once; 0 means
	// 2×GOMAXPROCS. Each large file is itself encoded by Workers
	// goroutines.
	Concurrency int
	// Workers is eris.EncodeOptions.Workers for files of 256 KiB and more
	// (smaller ones use one); 0 means GOMAXPROCS.
	Workers int
}

// EncodeStats describe an encoded tree.
type EncodeStats struct {
	Files            int64 // regular and executable files, each path counted
	Executables      int64 // of which executable
	Symlinks         int64
	Directories      int64 // the root included, when it is a directory
	Bytes            int64 // content bytes of the files, each path counted
	DistinctContents int64 // distinct file contents (capabilities)
	DedupFiles       int64 // files whose content an earlier file already had
	DedupBytes       int64 // their bytes: stored once, not again
	EncodedBytes     int64 // bytes run through eris.Encode (hard links once)
	Blocks           int64 // blocks written, content and index, duplicates counted
	IndexBytes       int64 // length of the encoded index
	Dropped          int64 // unrepresentable entries left out (DropUnrepresentable)
}

// EncodeDir encodes the tree at dir on disk, writing the blocks of every
// file and of the index through p, and returns the tree's capability.
// Symlinks are recorded, never followed: when dir itself is a regular file
// or a symlink, the tree is that single file (the index's empty path), as a
// store item can be; write "dir/" to encode the directory a symlink points
// to. The tree must not change while it is encoded: a file replaced
// meanwhile is an error.
func EncodeDir(ctx context.Context, dir string, p eris.BlockPutter, opts EncodeOptions) (eris.ReadCapability, EncodeStats, error) {
	info, err := os.Lstat(dir)
	if err != nil {
		return eris.ReadCapability{}, EncodeStats{}, fmt.Errorf("erisfs: encode: %w", err)
	}
	if info.IsDir() {
		return encodeFS(ctx, os.DirFS(dir), ".", p, opts)
	}
	return encodeFS(ctx, os.DirFS(filepath.Dir(dir)), filepath.Base(dir), p, opts)
}

// EncodeFS is EncodeDir for the tree at the root of fsys. Symlinks are
// read with fs.ReadLink, so fsys must implement fs.ReadLinkFS (as
// os.DirFS and this package's FS do) for trees holding symlinks. A root
// that is not a directory makes a single-file tree.
func EncodeFS(ctx context.Context, fsys fs.FS, p eris.BlockPutter, opts EncodeOptions) (eris.ReadCapability, EncodeStats, error) {
	return encodeFS(ctx, fsys, ".", p, opts)
}

// fileJob is one file's content to encode, and the paths that hold it (more
// than one for hard links).
type fileJob struct {
	name  string // in the source fs
	info  fs.FileInfo
	kind  Kind
	paths [][]string
	cap   eris.ReadCapability
	stats eris.Stats
}

// encoder gathers a tree from a source and encodes it.
type encoder struct {
	opts   EncodeOptions
	log    *slog.Logger
	codec  *codec
	put    eris.BlockPutter
	items  []item // symlinks, then files once encoded
	jobs   []*fileJob
	links  map[fileID]*fileJob
	stats  EncodeStats
	counts int // entries so far, directories included
}

func newEncoder(p eris.BlockPutter, opts EncodeOptions) (*encoder, error) {
	opts.Limits = opts.Limits.withDefaults()
	if opts.Concurrency <= 0 {
		opts.Concurrency = 2 * runtime.GOMAXPROCS(0)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := newCodec(opts.Limits, true)
	if err != nil {
		return nil, err
	}
	return &encoder{opts: opts, log: log, codec: c, put: p, links: make(map[fileID]*fileJob)}, nil
}

func encodeFS(ctx context.Context, fsys fs.FS, root string, p eris.BlockPutter, opts EncodeOptions) (eris.ReadCapability, EncodeStats, error) {
	e, err := newEncoder(p, opts)
	if err != nil {
		return eris.ReadCapability{}, EncodeStats{}, err
	}
	info, err := fs.Lstat(fsys, root)
	if err != nil {
		return eris.ReadCapability{}, EncodeStats{}, fmt.Errorf("erisfs: encode: %w", err)
	}
	if _, err := e.visit(ctx, fsys, root, nil, info.Mode(), func() (fs.FileInfo, error) { return info, nil }); err != nil {
		return eris.ReadCapability{}, EncodeStats{}, err
	}
	if err := e.encodeFiles(ctx, fsys); err != nil {
		return eris.ReadCapability{}, EncodeStats{}, err
	}
	return e.finish(ctx)
}

// entryName is the source name of the entry called base in directory dir.
func entryName(dir, base string) string {
	if dir == "." {
		return base
	}
	return dir + "/" + base
}

// reject refuses an unrepresentable entry, or drops it with a warning.
func (e *encoder) reject(path, reason string) error {
	if !e.opts.DropUnrepresentable {
		return unrepresentable(path, "%s", reason)
	}
	e.log.Warn("erisfs: dropping an entry ERIS-FS cannot represent", "path", path, "reason", reason)
	e.stats.Dropped++
	return nil
}

// count adds one entry against the limit.
func (e *encoder) count(path string) error {
	e.counts++
	if e.counts > e.opts.Limits.MaxEntries {
		return overLimit(path, "more than %d entries, directories included", e.opts.Limits.MaxEntries)
	}
	return nil
}

// checkPath applies the name rules and limits to a new path. A name ERIS-FS
// cannot hold is unrepresentable (ok false, err nil when dropped); a limit
// is always an error.
func (e *encoder) checkPath(comps []string) (ok bool, err error) {
	path := joinPath(comps)
	l := e.opts.Limits
	if len(comps) > l.MaxDepth {
		return false, overLimit(path, "%d components, limit %d", len(comps), l.MaxDepth)
	}
	if len(comps) == 0 {
		return true, nil
	}
	name := comps[len(comps)-1]
	if why := checkName(name); why != "" {
		return false, e.reject(path, why)
	}
	if len(name) > l.MaxNameLen {
		return false, overLimit(path, "name of %d bytes, limit %d", len(name), l.MaxNameLen)
	}
	return true, nil
}

// addSymlink records a symlink.
func (e *encoder) addSymlink(comps []string, target string) (bool, error) {
	path := joinPath(comps)
	if why := checkTarget(target); why != "" {
		return false, e.reject(path, why)
	}
	if len(target) > e.opts.Limits.MaxTargetLen {
		return false, overLimit(path, "symlink target of %d bytes, limit %d", len(target), e.opts.Limits.MaxTargetLen)
	}
	if err := e.count(path); err != nil {
		return false, err
	}
	e.items = append(e.items, item{path: comps, kind: Symlink, target: target})
	e.stats.Symlinks++
	return true, nil
}

// irregular explains a file type ERIS-FS has no entry for.
func irregular(m fs.FileMode) string {
	switch {
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return fmt.Sprintf("irregular file (mode %v)", m)
}

// visit walks the entry name of fsys at comps. It reports whether the entry
// is in the tree (false when dropped).
func (e *encoder) visit(ctx context.Context, fsys fs.FS, name string, comps []string, mode fs.FileMode, stat func() (fs.FileInfo, error)) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if ok, err := e.checkPath(comps); !ok || err != nil {
		return false, err
	}
	path := joinPath(comps)
	switch mode.Type() {
	case fs.ModeDir:
		list, err := fs.ReadDir(fsys, name)
		if err != nil {
			return false, fmt.Errorf("erisfs: encode: %w", err)
		}
		kept := 0
		for _, d := range list {
			child := append(comps[:len(comps):len(comps)], d.Name())
			ok, err := e.visit(ctx, fsys, entryName(name, d.Name()), child, d.Type(), d.Info)
			if err != nil {
				return false, err
			}
			if ok {
				kept++
			}
		}
		if kept == 0 && len(comps) > 0 {
			// Directories exist in ERIS-FS only through the paths of
			// their entries (ERIS-FS, "Limitations").
			return false, e.reject(path, "empty directory")
		}
		if err := e.count(path); err != nil {
			return false, err
		}
		e.stats.Directories++
		return true, nil
	case fs.ModeSymlink:
		target, err := fs.ReadLink(fsys, name)
		if err != nil {
			return false, fmt.Errorf("erisfs: encode: %w", err)
		}
		return e.addSymlink(comps, target)
	case 0:
		info, err := stat()
		if err != nil {
			return false, fmt.Errorf("erisfs: encode: %w", err)
		}
		if err := e.count(path); err != nil {
			return false, err
		}
		// The owner's executable bit decides, as in Nix's and Guix's nar
		// serializers.
		kind := Regular
		if info.Mode()&0o100 != 0 {
			kind = Executable
		}
		id, linked := linkID(info)
		if j := e.links[id]; linked && j != nil && j.kind == kind {
			j.paths = append(j.paths, comps)
			return true, nil
		}
		j := &fileJob{name: name, info: info, kind: kind, paths: [][]string{comps}}
		e.jobs = append(e.jobs, j)
		if linked {
			e.links[id] = j
		}
		return true, nil
	default:
		return false, e.reject(path, irregular(mode))
	}
}

// encodeFiles encodes the files' contents, several at once.
func (e *encoder) encodeFiles(ctx context.Context, fsys fs.FS) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(e.opts.Concurrency)
	for _, j := range e.jobs {
		g.Go(func() error { return e.encodeFile(ctx, fsys, j) })
	}
	return g.Wait()
}

func (e *encoder) encodeFile(ctx context.Context, fsys fs.FS, j *fileJob) error {
	path := joinPath(j.paths[0])
	f, err := fsys.Open(j.name)
	if err != nil {
		return fmt.Errorf("erisfs: encode %s: %w", displayPath(path), err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("erisfs: encode %s: %w", displayPath(path), err)
	}
	if !st.Mode().IsRegular() || !sameFile(j.info, st) {
		return fmt.Errorf("erisfs: encode %s: changed while being encoded", displayPath(path))
	}
	return e.encodeContent(ctx, f, j, st.Size())
}

// encodeContent runs one file's content through eris.Encode.
func (e *encoder) encodeContent(ctx context.Context, r io.Reader, j *fileJob, size int64) error {
	workers := e.opts.Workers
	if size < 256<<10 {
		workers = 1 // one batch of the eris encoder: more workers would idle
	}
	rc, s, err := eris.EncodeStats(ctx, r, e.put, eris.EncodeOptions{
		BlockSize: e.opts.ContentBlockSize,
		Secret:    e.opts.ContentSecret,
		Workers:   workers,
	})
	if err != nil {
		return fmt.Errorf("erisfs: encode %s: %w", displayPath(joinPath(j.paths[0])), err)
	}
	j.cap, j.stats = rc, s
	return nil
}

// finish adds the files to the index, counts what deduplicated, and
// encodes the index.
func (e *encoder) finish(ctx context.Context) (eris.ReadCapability, EncodeStats, error) {
	seen := make(map[eris.ReadCapability]bool, len(e.jobs))
	for _, j := range e.jobs {
		n := int64(len(j.paths))
		e.stats.Files += n
		if j.kind == Executable {
			e.stats.Executables += n
		}
		e.stats.Bytes += n * j.stats.Size
		e.stats.EncodedBytes += j.stats.Size
		e.stats.Blocks += j.stats.Blocks
		dups := n - 1
		if seen[j.cap] {
			dups = n
		} else {
			seen[j.cap] = true
		}
		e.stats.DedupFiles += dups
		e.stats.DedupBytes += dups * j.stats.Size
		for _, p := range j.paths {
			e.items = append(e.items, item{path: p, kind: j.kind, cap: j.cap})
		}
	}
	e.stats.DistinctContents = int64(len(seen))
	idx, err := e.codec.marshal(e.items)
	if err != nil {
		return eris.ReadCapability{}, EncodeStats{}, err
	}
	if int64(len(idx)) > e.opts.Limits.MaxIndexSize {
		return eris.ReadCapability{}, EncodeStats{}, fmt.Errorf("erisfs: encode: %w: index of %d bytes, limit %d", ErrLimit, len(idx), e.opts.Limits.MaxIndexSize)
	}
	rc, s, err := eris.EncodeStats(ctx, bytes.NewReader(idx), e.put, eris.EncodeOptions{
		BlockSize: e.opts.IndexBlockSize,
		Secret:    e.opts.IndexSecret,
		Workers:   e.opts.Workers,
	})
	if err != nil {
		return eris.ReadCapability{}, EncodeStats{}, fmt.Errorf("erisfs: encode index: %w", err)
	}
	e.stats.IndexBytes = int64(len(idx))
	e.stats.Blocks += s.Blocks
	return rc, e.stats, nil
}
