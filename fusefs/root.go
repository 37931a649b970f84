package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"erismount/eris"
	"erismount/erisfs"
)

// Defaults of Options.
const (
	DefaultDeadline        = 5 * time.Second
	DefaultReadahead       = 8 << 20
	DefaultReadaheadMemory = 64 << 20
	DefaultTreeAhead       = 64 << 20
	DefaultFileName        = "content"
)

// Options configure a mount. The zero value is useful.
type Options struct {
	// Deadline bounds every operation that needs blocks (the lookup of a
	// file, whose size comes from its content; reads; user.eris.local).
	// Past it the operation fails with EIO. 0 means DefaultDeadline.
	Deadline time.Duration
	// Local answers user.eris.local: the blocks held without a network.
	// Nil leaves that attribute out.
	Local Local
	// Readahead is how far ahead of a sequential reader of one open file
	// our own readahead fetches, at most. 0 means DefaultReadahead;
	// negative turns it off (the kernel's own readahead remains).
	Readahead int
	// ReadaheadMemory bounds the prefetched bytes all open files hold
	// together. 0 means DefaultReadaheadMemory.
	ReadaheadMemory int
	// TreeAhead is how many bytes of the files that follow in the tree's
	// order are fetched into the block cache, at most, ahead of a reader
	// that opens file after file in that order (tar, cp -r; see
	// treeahead.go); an executable up to a quarter of it is fetched whole
	// when opened. 0 means DefaultTreeAhead; negative turns both off.
	TreeAhead int
	// FileName is the name a single-file tree (a store item that is one
	// file or symlink) has in the mount directory, since a mount root is
	// always a directory. "" means DefaultFileName.
	FileName string
	// AllowOther lets users other than the one who mounted see the tree
	// (FUSE allow_other; fusermount3 needs user_allow_other in
	// /etc/fuse.conf for non-root users).
	AllowOther bool
	// Logger receives what goes wrong, each missing or corrupt block once;
	// nil discards.
	Logger *slog.Logger
	// Debug logs every FUSE request and reply to Logger at debug level.
	Debug bool
	// NonEmpty allows mounting over a directory that holds files, hiding
	// them while mounted (FUSE's nonempty); by default Mount refuses.
	NonEmpty bool
}

func (o Options) withDefaults() Options {
	if o.Deadline <= 0 {
		o.Deadline = DefaultDeadline
	}
	if o.Readahead == 0 {
		o.Readahead = DefaultReadahead
	}
	if o.TreeAhead == 0 {
		o.TreeAhead = DefaultTreeAhead
	}
	if o.ReadaheadMemory <= 0 {
		o.ReadaheadMemory = DefaultReadaheadMemory
	}
	if o.FileName == "" {
		o.FileName = DefaultFileName
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Local is the part of a block store a mount can read without a network,
// as user.eris.local counts it: Has says whether a block is held, GetBlock
// reads the internal nodes that name the rest (cache.SQLite is one).
type Local interface {
	eris.BlockGetter
	Has(ctx context.Context, ref eris.Ref) (bool, error)
}

// cacheTimeout is how long the kernel may keep entries, attributes and
// negative lookups: the tree is immutable, so as long as it likes.
const cacheTimeout = 24 * time.Hour

// grace is how long an operation may overstay its deadline before it is
// abandoned: the eris reader returns promptly once its context ends, so
// only a block source that ignores its context needs it.
const grace = 250 * time.Millisecond

// mountFS is the state every node of one mount shares.
type mountFS struct {
	tree     *erisfs.Tree
	opts     Options
	log      *slog.Logger
	uid, gid uint32
	// inoShift is added to entry numbers: 0 when the tree's root is the
	// mount root, 1 when a single-file tree sits below a synthetic root
	// (which takes inode 1).
	inoShift uint64
	// base is the context of background work (readahead): cancelled when
	// the mount is closed.
	base context.Context
	ra   *prefetcher
	tra  *treeAhead // nil when Options.TreeAhead is off
	bufs *sync.Pool // *[]byte of maxRead bytes, for replies
	seen seenSet
	st   *counters
}

// newMountFS returns the state of a mount of tree, or with a nil tree the
// state the items of a store view share.
func newMountFS(ctx context.Context, tree *erisfs.Tree, opts Options) *mountFS {
	opts = opts.withDefaults()
	m := &mountFS{
		tree: tree,
		opts: opts,
		log:  opts.Logger,
		uid:  uint32(os.Getuid()),
		gid:  uint32(os.Getgid()),
		base: ctx,
		bufs: &sync.Pool{New: func() any { b := make([]byte, maxRead); return &b }},
		st:   new(counters),
	}
	if opts.Readahead > 0 {
		m.ra = newPrefetcher(int64(opts.Readahead), int64(opts.ReadaheadMemory), m.st)
	}
	if tree == nil {
		return m
	}
	if !tree.Root().IsDir() {
		m.inoShift = 1
	}
	m.setTree(tree)
	return m
}

// withTree returns a mount state for tree that shares m's options,
// readahead budget, buffers and counters, its entry numbers shifted by
// inoShift: one store item of a store view (see store.go).
func (m *mountFS) withTree(tree *erisfs.Tree, inoShift uint64) *mountFS {
	n := &mountFS{opts: m.opts, log: m.log, uid: m.uid, gid: m.gid, inoShift: inoShift,
		base: m.base, ra: m.ra, bufs: m.bufs, st: m.st}
	n.setTree(tree)
	return n
}

// setTree sets the tree served and its tree-ahead.
func (m *mountFS) setTree(tree *erisfs.Tree) {
	m.tree = tree
	if m.opts.TreeAhead > 0 {
		m.tra = newTreeAhead(m, int64(m.opts.TreeAhead))
	}
}

// root is the mount's root directory node: the tree's root, or a synthetic
// directory holding a single-file tree under Options.FileName.
func (m *mountFS) root() *dirNode {
	if m.tree.Root().IsDir() {
		return &dirNode{entryNode: entryNode{m, m.tree.Root()}}
	}
	return &dirNode{entryNode: entryNode{m: m}}
}

// entryNode is what every node type shares: the mount and the entry
// (nil for the synthetic root of a single-file tree), and the operations
// that work the same for every kind of entry.
type entryNode struct {
	m *mountFS
	e *erisfs.Entry
}

func (n *entryNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return n.m.statfs(out)
}

func (n *entryNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return n.m.getxattr(ctx, n.e, attr, dest)
}

func (n *entryNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return n.m.listxattr(n.e, dest)
}

// ino is the inode number of e.
func (m *mountFS) ino(e *erisfs.Entry) uint64 { return e.Ino() + m.inoShift }

// node returns a new node for e, of the type its kind asks for.
func (m *mountFS) node(e *erisfs.Entry) (gofs.InodeEmbedder, gofs.StableAttr) {
	attr := gofs.StableAttr{Ino: m.ino(e)}
	switch e.Kind() {
	case erisfs.Directory:
		attr.Mode = syscall.S_IFDIR
		return &dirNode{entryNode: entryNode{m, e}}, attr
	case erisfs.Symlink:
		attr.Mode = syscall.S_IFLNK
		return &symlinkNode{entryNode: entryNode{m, e}}, attr
	}
	attr.Mode = syscall.S_IFREG
	return &fileNode{entryNode: entryNode{m, e}}, attr
}

// unixMode is e's mode as stat(2) reports it: type bits and permissions.
func unixMode(e *erisfs.Entry) uint32 {
	perm := uint32(e.Mode().Perm())
	switch e.Kind() {
	case erisfs.Directory:
		return syscall.S_IFDIR | perm
	case erisfs.Symlink:
		return syscall.S_IFLNK | perm
	}
	return syscall.S_IFREG | perm
}

// attrBlockSize is the st_blksize we report: a 32 KiB ERIS block, so that
// tools reading "optimal" chunks ask for whole blocks.
const attrBlockSize = eris.BlockSize32K

// fill sets out to the attributes of e, whose size is size. Times are
// the Unix time 1, as in a Nix or Guix store.
func (m *mountFS) fill(e *erisfs.Entry, size int64, out *fuse.Attr) {
	out.Ino = m.ino(e)
	out.Mode = unixMode(e)
	out.Size = uint64(size)
	out.Nlink = 1
	if e.IsDir() {
		out.Nlink = 2 + uint32(subdirs(e))
	}
	m.fillCommon(out)
}

func (m *mountFS) fillCommon(out *fuse.Attr) {
	out.Uid, out.Gid = m.uid, m.gid
	out.Atime, out.Mtime, out.Ctime = 1, 1, 1
	out.Blksize = attrBlockSize
	out.Blocks = (out.Size + 511) / 512
}

// statfs describes the mount for statfs(2), asked on any of its nodes:
// the tree's entries as inodes, nothing free (it is read-only), and no
// total size, which only fetching every file's size would tell.
func (m *mountFS) statfs(out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = attrBlockSize
	out.Frsize = attrBlockSize
	out.Files = uint64(m.tree.Len())
	out.NameLen = erisfs.DefaultMaxNameLen
	return 0
}

func subdirs(e *erisfs.Entry) int {
	n := 0
	for c := range e.All() {
		if c.IsDir() {
			n++
		}
	}
	return n
}

// size returns the size of e within the operation deadline: known at once
// for directories and symlinks, fetched once for a file (the rightmost path
// of its content). A small file is fetched whole instead (see smallFile).
func (m *mountFS) size(ctx context.Context, op string, e *erisfs.Entry) (int64, syscall.Errno) {
	if n, ok := e.CachedSize(); ok {
		return n, 0
	}
	var n int64
	err := m.do(ctx, func(ctx context.Context) error {
		var err error
		if smallFile(e) {
			// Into the block cache; Size then finds it there.
			r, err := m.tree.Open(ctx, e)
			if err != nil {
				return err
			}
			if _, err := r.ReadAll(ctx, smallFileMax); err != nil {
				return fmt.Errorf("fusefs: fetch %s: %w", pathOf(e), err)
			}
		}
		n, err = m.tree.Size(ctx, e)
		return err
	}, nil)
	if err != nil {
		return 0, m.errno(op, e, err)
	}
	return n, 0
}

// smallFile reports whether e is a file of at most one internal node over
// 1 KiB leaves: under 16 KiB, which eris.Encode stores in 1 KiB blocks.
// Its size is fetched by fetching all of it: the root node, then every
// leaf at once, the last of which gives the size — as many round trips as
// the size alone, for at most 15 KiB more, and the read that usually
// follows a lookup finds the content in the block cache instead of waiting
// for another round trip.
func smallFile(e *erisfs.Entry) bool {
	rc := e.Capability()
	return e.Kind().IsFile() && rc.BlockSize() == eris.BlockSize1K && rc.Level() <= 1
}

// smallFileMax is the most a small file holds: 16 leaves of 1 KiB, the
// last with at least a byte of padding.
const smallFileMax = 16*eris.BlockSize1K - 1

// do runs f under the operation deadline. It returns f's result, or, if f
// overstays the deadline by more than grace (a block source that ignores
// its context), an error matching context.DeadlineExceeded, leaving f to
// finish on its own: the caller must not touch what f writes after that,
// and late (if not nil) runs once f is done, to release what it holds.
func (m *mountFS) do(ctx context.Context, f func(ctx context.Context) error, late func()) error {
	return m.within(ctx, m.opts.Deadline, f, late)
}

// within is do with another deadline.
//
// The kernel's interrupts (a signal to the reading process) do not end an
// operation: the deadline alone does. Honouring them made Go readers
// livelock: their runtime signals threads all the time, every retried
// read was interrupted at once and answered EINTR, and os.ReadFile, which
// retries EINTR, spun for 25 s past a 2 s deadline with its peer gone.
// A fatal signal still ends the reader at once (the kernel does not wait
// for us then).
func (m *mountFS) within(kctx context.Context, deadline time.Duration, f func(ctx context.Context) error, late func()) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(kctx), deadline)
	defer cancel()
	defer func() {
		if kctx.Err() != nil {
			m.st.interrupted.Add(1)
		}
	}()
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		m.st.abandoned.Add(1)
		if late != nil {
			go func() {
				<-done
				late()
			}()
		}
		return fmt.Errorf("%w: abandoned %v after its deadline (the block source ignores its context)", ctx.Err(), grace)
	}
}

// toErrno translates an error of this package's operations: a path that
// does not exist is ENOENT; everything else — a missing or corrupt block,
// a passed deadline, an unreachable peer — is EIO. There is no EINTR:
// the kernel's interrupts do not cancel an operation (see within), so a
// cancellation can only come from below (a peer's connection closing) and
// is the block source failing: answering EINTR there made readers that
// retry it (Go's os.File does) spin until the peer came back.
func toErrno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, eris.ErrNotFound), errors.Is(err, eris.ErrCorrupt), errors.As(err, new(*eris.BlockError)):
		return syscall.EIO
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	}
	return syscall.EIO
}

// errno translates err for an operation on e, logging its cause once.
func (m *mountFS) errno(op string, e *erisfs.Entry, err error) syscall.Errno {
	errno := toErrno(err)
	if errno == syscall.EIO {
		m.st.eio.Add(1)
		if errors.Is(err, context.DeadlineExceeded) {
			m.st.timeouts.Add(1)
		}
	}
	key := pathOf(e) + "\x00" + op
	var be *eris.BlockError
	if errors.As(err, &be) {
		key = be.Ref.String()
	}
	if m.seen.add(key) {
		level := slog.LevelWarn
		if errors.Is(err, eris.ErrCorrupt) {
			level = slog.LevelError
		}
		m.log.Log(context.Background(), level, "fusefs: "+op+" failed", "path", pathOf(e), "errno", errno.Error(), "err", err)
	}
	return errno
}

// pathOf is e's path for logs; "/" for the root.
func pathOf(e *erisfs.Entry) string {
	if e == nil {
		return "/"
	}
	return "/" + e.Path()
}

// seenSet remembers which causes were logged, so each is logged once. It
// forgets everything when full, so it stays bounded.
type seenSet struct {
	mu sync.Mutex
	m  map[string]struct{}
}

const maxSeen = 1 << 14

// add reports whether key is new.
func (s *seenSet) add(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; ok {
		return false
	}
	if s.m == nil || len(s.m) >= maxSeen {
		s.m = make(map[string]struct{})
	}
	s.m[key] = struct{}{}
	return true
}

// Stats count what a mount did.
type Stats struct {
	Reads          int64 // FUSE read requests answered
	ReadBytes      int64 // bytes returned by them
	EIO            int64 // operations that failed with EIO
	Timeouts       int64 // of which because the deadline passed
	Abandoned      int64 // operations whose block source ignored the deadline
	Interrupted    int64 // operations the kernel interrupted (they finish anyway, within the deadline)
	ReadaheadBytes int64 // bytes prefetched by our readahead
	ReadaheadHits  int64 // bytes of reads served from prefetched chunks
	TreeAheadFiles int64 // files fetched ahead of a reader going through the tree, and executables fetched whole on open
	TreeAheadBytes int64 // their bytes
}

type counters struct {
	reads, readBytes, eio, timeouts, abandoned, interrupted atomic.Int64
	raBytes, raHits                                         atomic.Int64
	aheadFiles, aheadBytes                                  atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Reads:          c.reads.Load(),
		ReadBytes:      c.readBytes.Load(),
		EIO:            c.eio.Load(),
		Timeouts:       c.timeouts.Load(),
		Abandoned:      c.abandoned.Load(),
		Interrupted:    c.interrupted.Load(),
		ReadaheadBytes: c.raBytes.Load(),
		ReadaheadHits:  c.raHits.Load(),
		TreeAheadFiles: c.aheadFiles.Load(),
		TreeAheadBytes: c.aheadBytes.Load(),
	}
}
