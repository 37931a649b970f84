package fusefs

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sync/singleflight"

	"erismount/eris"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/source"
)

// The store view.
//
// A store view is a read-only directory that looks like a Nix or Guix
// store (/nix/store, /gnu/store) holding every store item some narinfo
// source vouches for. Looking up `<hash>-<name>` asks the source for the
// verified narinfo of `<hash>`, checks that it names exactly that store
// path in this store directory and carries an `ERIS:` capability, opens
// the item's ERIS-FS tree and shows it below that name with the same
// nodes, readahead, tree-ahead and deadlines as Mount. Nothing is
// fetched before a lookup, and of an item only what is read.
//
// Items are kept in a table, built on their first lookup and dropped when
// the kernel forgets them (OnForget). The table holds at most
// StoreOptions.MaxItems: beyond that the least recently looked-up item
// leaves it and the kernel is asked to forget its entry (a directory
// still in use stays usable; a later lookup builds it afresh). Unknown,
// untrusted and unusable names are answered ENOENT and remembered for
// StoreOptions.NegativeTTL, by the kernel and by the view.

// Defaults of StoreOptions.
const (
	DefaultMaxItems    = 1024
	DefaultNegativeTTL = 30 * time.Second
	// DefaultNodeCache is the size of the cache of decrypted internal
	// nodes every item of a store view shares.
	DefaultNodeCache = 64 << 20
)

// maxRemembered bounds the negative answers and the names of listed items
// a store view remembers; past it they are forgotten all at once.
const maxRemembered = 1 << 14

// ErrNoItem is matched by the errors of a store view's lookups that answer
// ENOENT: the narinfo source does not know or does not trust the item,
// its narinfo names another store path, or it has no ERIS field. It
// matches fs.ErrNotExist too.
var ErrNoItem = fmt.Errorf("no such store item (%w)", fs.ErrNotExist)

// NarinfoLookup gives the narinfo of a store item by the hash part of its
// store path (the 32 nix-base32 characters before the first dash), its
// signature checked against the keys the user trusts: source.Lookup, or
// any other.
type NarinfoLookup interface {
	// Narinfo returns the verified narinfo of hashPart. An error matching
	// source.ErrUnknown, source.ErrUntrusted or fs.ErrNotExist means that
	// the item is unknown or not trusted: the view answers ENOENT and
	// remembers it for a while. Any other error (an upstream that cannot
	// be reached) is EIO, not remembered.
	Narinfo(ctx context.Context, hashPart string) (*narinfo.Narinfo, error)
}

// noSuchItem reports whether err of a NarinfoLookup means that the item
// is unknown or not trusted.
func noSuchItem(err error) bool {
	return errors.Is(err, source.ErrUnknown) || errors.Is(err, source.ErrUntrusted) || errors.Is(err, fs.ErrNotExist)
}

// NarinfoLister is implemented by lookups that know some items without
// asking anyone (a directory of narinfos, a cache): a listing of the view
// shows them, with the items looked up so far.
type NarinfoLister interface {
	// HashParts lists the hash parts known locally.
	HashParts(ctx context.Context) ([]string, error)
}

// StoreOptions configure a store view. StoreDir, Narinfos and Blocks are
// required; the zero values of the others are useful.
type StoreOptions struct {
	// Options are those of every item's tree, as for Mount (FileName is
	// not used: an item that is a single file is that file).
	Options
	// StoreDir is the store directory the view stands for, "/nix/store"
	// or "/gnu/store": a narinfo for another one is not shown.
	StoreDir string
	// Narinfos finds the items.
	Narinfos NarinfoLookup
	// Blocks gives the blocks of the items' trees.
	Blocks eris.BlockGetter
	// GetterVerifies says that Blocks verifies every block it returns, so
	// the trees need not hash them again (as erisfs.OpenOptions).
	GetterVerifies bool
	// Nodes caches the decrypted internal nodes of every item; nil gives
	// the view DefaultNodeCache bytes of its own.
	Nodes *eris.NodeCache
	// MaxItems bounds the items held at once (see above). 0 means
	// DefaultMaxItems.
	MaxItems int
	// NegativeTTL is how long a name answered ENOENT is remembered. 0
	// means DefaultNegativeTTL.
	NegativeTTL time.Duration
	// NoReferencesAhead turns off references-ahead: by default, once the
	// kernel looks an item up, the items its narinfo references are built
	// in the background (narinfo verified, index fetched), as a program
	// usually goes on to use them.
	NoReferencesAhead bool
}

// StoreStats count what a store view did.
type StoreStats struct {
	Items     int   // items held now
	Lookups   int64 // lookups of names in the view's root
	Built     int64 // items built (narinfo verified, tree opened)
	Negative  int64 // lookups answered ENOENT
	Failed    int64 // lookups that failed otherwise (EIO)
	Evicted   int64 // items dropped because MaxItems were held
	Forgotten int64 // items the kernel forgot
	Ahead     int64 // items built ahead, as references of an item looked up
}

// Store is a mounted store view.
type Store struct {
	*Server
	s *storeFS
}

// MountStore mounts a store view at dir (see the comment above) and serves
// it in the background; the Server's Unmount and Close end it.
func MountStore(ctx context.Context, dir string, opts StoreOptions) (*Store, error) {
	if opts.StoreDir == "" || opts.Narinfos == nil || opts.Blocks == nil {
		return nil, errors.New("fusefs: a store view needs StoreDir, Narinfos and Blocks")
	}
	if opts.MaxItems <= 0 {
		opts.MaxItems = DefaultMaxItems
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = DefaultNegativeTTL
	}
	if opts.Nodes == nil {
		opts.Nodes = eris.NewNodeCache(DefaultNodeCache)
	}
	abs, err := CheckMountPoint(dir, false)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := newStoreFS(ctx, opts)
	srv, err := serve(abs, s.root, s.m, "erismount-store:"+opts.StoreDir, false, cancel)
	if err != nil {
		return nil, err
	}
	go s.invalidate(ctx)
	s.m.log.Debug("store view mounted", "dir", abs, "store_dir", opts.StoreDir)
	return &Store{Server: srv, s: s}, nil
}

// StoreStats returns what the view has done so far.
func (st *Store) StoreStats() StoreStats { return st.s.stats() }

// storeFS is the state of a store view.
type storeFS struct {
	m    *mountFS // what every item shares: options, readahead, counters
	opts StoreOptions
	root *storeRoot

	mu    sync.Mutex
	items map[string]*storeItem // by hash part
	lru   list.List             // of *storeItem, the most recently looked up first
	seq   uint64                // the last item's number
	neg   remembered[error]     // names answered ENOENT, and why
	names remembered[string]    // hash part → base name, of items listed

	group singleflight.Group
	inval chan string   // names whose kernel entries to invalidate
	ahead chan struct{} // one token per reference being built ahead

	lookups, built, negative, failed, evicted, forgotten, aheadBuilt atomic.Int64
}

func newStoreFS(ctx context.Context, opts StoreOptions) *storeFS {
	s := &storeFS{
		m:     newMountFS(ctx, nil, opts.Options),
		opts:  opts,
		items: make(map[string]*storeItem),
		inval: make(chan string, 256),
		ahead: make(chan struct{}, aheadRefs),
	}
	s.neg.ttl = opts.NegativeTTL
	s.root = &storeRoot{s: s}
	return s
}

func (s *storeFS) stats() StoreStats {
	s.mu.Lock()
	n := len(s.items)
	s.mu.Unlock()
	return StoreStats{Items: n, Lookups: s.lookups.Load(), Built: s.built.Load(), Negative: s.negative.Load(),
		Failed: s.failed.Load(), Evicted: s.evicted.Load(), Forgotten: s.forgotten.Load(), Ahead: s.aheadBuilt.Load()}
}

// storeItem is a store item the view holds: its tree and the mount state
// of its nodes. Its inode numbers are its tree's entry numbers plus its
// own number shifted 32 bits up, so that no two items share one (the
// view's root is inode 1).
type storeItem struct {
	s          *storeFS
	hash, name string
	m          *mountFS
	elem       *list.Element // in storeFS.lru; nil once out of the table
	refs       []string      // base names of the items it references
	aheadDone  bool          // its references were built ahead (s.mu)
}

// References-ahead: how many references of one item are built ahead, at
// most, and how many at once in the whole view.
const (
	aheadRefsPerItem = 64
	aheadRefs        = 8
)

// itemShift is how far an item's number is shifted in its inode numbers.
const itemShift = 32

// item returns the item called name, building it on its first lookup.
// kernel says whether the kernel asked: then its references are built
// ahead, and a failure is a warning (a background build's is not).
func (s *storeFS) item(ctx context.Context, name string, kernel bool) (*storeItem, error) {
	it, err := s.lookupItem(ctx, name, kernel)
	if err == nil && kernel && !s.opts.NoReferencesAhead {
		s.referencesAhead(it)
	}
	return it, err
}

func (s *storeFS) lookupItem(ctx context.Context, name string, kernel bool) (*storeItem, error) {
	hash := name[:32]
	s.mu.Lock()
	if it := s.items[hash]; it != nil && it.name == name {
		s.lru.MoveToFront(it.elem)
		s.mu.Unlock()
		return it, nil
	}
	err, ok := s.neg.get(name)
	s.mu.Unlock()
	if ok {
		return nil, err
	}
	v, err, _ := s.group.Do(name, func() (any, error) {
		// The first caller's deadline bounds the others: they wait for
		// the same item.
		var it *storeItem
		err := s.m.within(ctx, 12*s.m.opts.Deadline, func(ctx context.Context) error {
			var err error
			it, err = s.build(ctx, name)
			return err
		}, nil)
		return it, err
	})
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.negative.Add(1)
			s.mu.Lock()
			s.neg.add(name, err)
			s.mu.Unlock()
			s.m.log.Debug("store: no such item", "name", name, "reason", err)
		} else {
			s.failed.Add(1)
			level := slog.LevelWarn
			if !kernel {
				level = slog.LevelDebug
			}
			s.m.log.Log(ctx, level, "store: lookup failed", "name", name, "err", err)
		}
		return nil, err
	}
	return v.(*storeItem), nil
}

// referencesAhead builds the items it references in the background, once,
// each that is not held or known to be missing, aheadRefs at a time.
func (s *storeFS) referencesAhead(it *storeItem) {
	s.mu.Lock()
	if it.aheadDone {
		s.mu.Unlock()
		return
	}
	it.aheadDone = true
	var todo []string
	for _, ref := range it.refs {
		if len(todo) == aheadRefsPerItem {
			break
		}
		if held := s.items[ref[:32]]; held != nil && held.name == ref {
			continue
		}
		if _, missing := s.neg.get(ref); missing {
			continue
		}
		todo = append(todo, ref)
	}
	s.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	go func() {
		for _, ref := range todo {
			select {
			case s.ahead <- struct{}{}:
			case <-s.m.base.Done():
				return
			}
			go func() {
				defer func() { <-s.ahead }()
				if _, err := s.item(eris.Background(s.m.base), ref, false); err == nil {
					s.aheadBuilt.Add(1)
				}
			}()
		}
	}()
}

// check fetches the narinfo of name's hash part and checks that it names
// exactly name in the view's store directory and has an ERIS capability.
func (s *storeFS) check(ctx context.Context, hash, name string) (eris.ReadCapability, string, error) {
	rc, n, err := s.checkNarinfo(ctx, hash, name)
	if err != nil {
		return rc, "", err
	}
	return rc, n.BaseName(), nil
}

// checkNarinfo is check, returning the narinfo.
func (s *storeFS) checkNarinfo(ctx context.Context, hash, name string) (eris.ReadCapability, *narinfo.Narinfo, error) {
	n, err := s.opts.Narinfos.Narinfo(ctx, hash)
	if err != nil {
		if noSuchItem(err) {
			return eris.ReadCapability{}, nil, fmt.Errorf("%w: %w", ErrNoItem, err)
		}
		return eris.ReadCapability{}, nil, fmt.Errorf("narinfo of %s: %w", hash, err)
	}
	if dir := n.StoreDir(); dir != s.opts.StoreDir {
		return eris.ReadCapability{}, nil, fmt.Errorf("%w: the narinfo of %s is for %s, in %s, not %s", ErrNoItem, hash, n.StorePath, dir, s.opts.StoreDir)
	}
	if name != "" && n.BaseName() != name {
		return eris.ReadCapability{}, nil, fmt.Errorf("%w: the narinfo of %s is for %s", ErrNoItem, hash, n.StorePath)
	}
	rc, err := n.Capability()
	if err != nil {
		// Served through its nar is another issue's; until then, none.
		return eris.ReadCapability{}, nil, fmt.Errorf("%w: %w", ErrNoItem, err)
	}
	return rc, n, nil
}

// build makes the item called name and puts it in the table.
func (s *storeFS) build(ctx context.Context, name string) (*storeItem, error) {
	hash := name[:32]
	start := time.Now()
	rc, n, err := s.checkNarinfo(ctx, hash, name)
	if err != nil {
		return nil, err
	}
	checked := time.Now()
	tree, err := erisfs.Open(ctx, rc, s.opts.Blocks, erisfs.OpenOptions{Nodes: s.opts.Nodes, GetterVerifies: s.opts.GetterVerifies})
	if err != nil {
		return nil, fmt.Errorf("open the tree of %s: %w", name, err)
	}
	s.built.Add(1)
	s.m.log.Debug("store: item", "name", name, "entries", tree.Len(),
		"narinfo", checked.Sub(start).Round(time.Microsecond), "index", time.Since(checked).Round(time.Microsecond))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	it := &storeItem{s: s, hash: hash, name: name, m: s.m.withTree(tree, s.seq<<itemShift)}
	for _, ref := range n.References {
		if ref != name && narinfo.CheckBaseName(ref) == nil {
			it.refs = append(it.refs, ref)
		}
	}
	if old := s.items[hash]; old != nil {
		s.drop(old)
	}
	s.items[hash] = it
	it.elem = s.lru.PushFront(it)
	s.names.add(hash, name)
	for len(s.items) > s.opts.MaxItems {
		old := s.lru.Back().Value.(*storeItem)
		s.drop(old)
		s.evicted.Add(1)
		select {
		case s.inval <- old.name:
		default: // the kernel forgets it in its own time
		}
	}
	return it, nil
}

// drop takes it out of the table. s.mu is held.
func (s *storeFS) drop(it *storeItem) {
	if it.elem != nil {
		s.lru.Remove(it.elem)
		it.elem = nil
	}
	if s.items[it.hash] == it {
		delete(s.items, it.hash)
	}
}

// forgot is called when the kernel has forgotten it.
func (s *storeFS) forgot(it *storeItem) {
	s.forgotten.Add(1)
	s.mu.Lock()
	s.drop(it)
	s.mu.Unlock()
}

// invalidate asks the kernel to forget the entries of items dropped from
// the table, until ctx ends. It runs apart from the FUSE requests: the
// kernel handles an invalidation under the directory's lock, which a
// lookup in progress holds.
func (s *storeFS) invalidate(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-s.inval:
			if errno := s.root.NotifyEntry(name); errno != 0 && errno != syscall.ENOENT {
				s.m.log.Debug("store: invalidate entry", "name", name, "errno", errno.Error())
			}
		}
	}
}

// list returns the names the view shows: the items the source knows
// locally and the items held.
func (s *storeFS) list(ctx context.Context) []string {
	seen := make(map[string]string) // hash → name
	s.mu.Lock()
	for hash, it := range s.items {
		seen[hash] = it.name
	}
	s.mu.Unlock()
	if l, ok := s.opts.Narinfos.(NarinfoLister); ok {
		hashes, err := l.HashParts(ctx)
		if err != nil {
			s.m.log.Warn("store: list the narinfos known locally", "err", err)
		}
		for _, hash := range hashes {
			if _, ok := seen[hash]; ok {
				continue
			}
			s.mu.Lock()
			name, ok := s.names.get(hash)
			s.mu.Unlock()
			if !ok {
				_, n, err := s.check(ctx, hash, "")
				if err != nil {
					s.m.log.Debug("store: not listed", "hash", hash, "reason", err)
					continue
				}
				name = n
				s.mu.Lock()
				s.names.add(hash, name)
				s.mu.Unlock()
			}
			seen[hash] = name
		}
	}
	names := make([]string, 0, len(seen))
	for _, n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// remembered is a map of at most maxRemembered entries, each kept for ttl
// (0: until forgotten); when full it forgets everything. The caller locks.
type remembered[V any] struct {
	ttl time.Duration
	m   map[string]rememberedValue[V]
}

type rememberedValue[V any] struct {
	v       V
	expires time.Time
}

func (r *remembered[V]) add(k string, v V) {
	if r.m == nil || len(r.m) >= maxRemembered {
		r.m = make(map[string]rememberedValue[V])
	}
	var exp time.Time
	if r.ttl > 0 {
		exp = time.Now().Add(r.ttl)
	}
	r.m[k] = rememberedValue[V]{v, exp}
}

func (r *remembered[V]) get(k string) (V, bool) {
	e, ok := r.m[k]
	if ok && !e.expires.IsZero() && time.Now().After(e.expires) {
		delete(r.m, k)
		ok = false
	}
	return e.v, ok
}

// storeRoot is the root directory of a store view.
type storeRoot struct {
	gofs.Inode
	s *storeFS
}

func (r *storeRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	s := r.s
	s.lookups.Add(1)
	if err := narinfo.CheckBaseName(name); err != nil {
		out.SetEntryTimeout(s.opts.NegativeTTL)
		return nil, syscall.ENOENT
	}
	it, err := s.item(ctx, name, true)
	if err != nil {
		errno := toErrno(err)
		if errno == syscall.ENOENT {
			out.SetEntryTimeout(s.opts.NegativeTTL)
		}
		return nil, errno
	}
	e := it.m.tree.Root()
	size, errno := it.m.size(ctx, "lookup", e)
	if errno != 0 {
		return nil, errno
	}
	node, attr := it.rootNode()
	it.m.fill(e, size, &out.Attr)
	return r.NewInode(ctx, node, attr), 0
}

// rootNode returns a node for the item's root entry that tells the view
// when the kernel forgets it.
func (it *storeItem) rootNode() (gofs.InodeEmbedder, gofs.StableAttr) {
	e := it.m.tree.Root()
	en := entryNode{it.m, e}
	attr := gofs.StableAttr{Ino: it.m.ino(e)}
	switch e.Kind() {
	case erisfs.Directory:
		attr.Mode = syscall.S_IFDIR
		return &itemDir{dirNode: dirNode{entryNode: en}, it: it}, attr
	case erisfs.Symlink:
		attr.Mode = syscall.S_IFLNK
		return &itemSymlink{symlinkNode: symlinkNode{entryNode: en}, it: it}, attr
	}
	attr.Mode = syscall.S_IFREG
	return &itemFile{fileNode: fileNode{entryNode: en}, it: it}, attr
}

// The root nodes of items: their kind's node, and OnForget.
type (
	itemDir struct {
		dirNode
		it *storeItem
	}
	itemFile struct {
		fileNode
		it *storeItem
	}
	itemSymlink struct {
		symlinkNode
		it *storeItem
	}
)

func (n *itemDir) OnForget()     { n.it.forgotten() }
func (n *itemFile) OnForget()    { n.it.forgotten() }
func (n *itemSymlink) OnForget() { n.it.forgotten() }

// forgotten tells the view that the kernel forgot the item's root.
func (it *storeItem) forgotten() { it.s.forgot(it) }

func (r *storeRoot) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Ino = 1
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	r.s.m.fillCommon(&out.Attr)
	return 0
}

// OpendirHandle lists the view: unlike a tree's directories, the listing
// changes, so the kernel does not keep it.
func (r *storeRoot) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	var names []string
	err := r.s.m.within(ctx, 12*r.s.m.opts.Deadline, func(ctx context.Context) error {
		names = r.s.list(ctx)
		return nil
	}, nil)
	if err != nil {
		return nil, 0, r.s.m.errno("readdir", nil, err)
	}
	list := make([]fuse.DirEntry, 0, len(names)+2)
	list = append(list,
		fuse.DirEntry{Name: ".", Ino: 1, Mode: syscall.S_IFDIR},
		fuse.DirEntry{Name: "..", Ino: 1, Mode: syscall.S_IFDIR})
	for _, name := range names {
		// The kind and inode of an item not built yet are not known
		// without its tree: DT_UNKNOWN, and a number of the name's own
		// (stat tells the real one).
		h := fnv.New64a()
		h.Write([]byte(name))
		list = append(list, fuse.DirEntry{Name: name, Ino: h.Sum64() | 1<<63})
	}
	return &dirHandle{list: list}, 0, 0
}

func (r *storeRoot) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = attrBlockSize
	out.Frsize = attrBlockSize
	out.Files = uint64(r.s.stats().Items)
	out.NameLen = erisfs.DefaultMaxNameLen
	return 0
}
