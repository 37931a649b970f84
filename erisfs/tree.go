package erisfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"erismount/eris"
)

// Kind is what an entry of a tree is. ERIS-FS knows exactly these four
// (ERIS-FS, "File System Objects"; Dolstra's thesis §5.2.1).
type Kind uint8

const (
	Directory  Kind = iota + 1 // implied by the paths below it
	Regular                    // a file, index type 0
	Executable                 // a file with the executable bit, index type 1
	Symlink                    // a symbolic link, index type 2
)

func (k Kind) String() string {
	switch k {
	case Directory:
		return "directory"
	case Regular:
		return "regular file"
	case Executable:
		return "executable file"
	case Symlink:
		return "symlink"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// IsFile reports whether k has content (Regular or Executable).
func (k Kind) IsFile() bool { return k == Regular || k == Executable }

// Entry is one node of a Tree: a directory, a file or a symlink. Entries
// are immutable, except for a file's size, which is fetched once and then
// remembered. Compare entries by pointer or by Ino.
type Entry struct {
	name     string
	parent   *Entry
	kind     Kind
	ino      uint64
	cap      eris.ReadCapability
	target   string
	children []*Entry     // sorted by name, directories only
	size     atomic.Int64 // files: -1 until known
}

// Name is the last component of the entry's path; "" for the root.
func (e *Entry) Name() string { return e.name }

// Path is the slash-separated path from the root; "" for the root.
func (e *Entry) Path() string {
	if e.parent == nil {
		return ""
	}
	n := 0
	for p := e; p.parent != nil; p = p.parent {
		n++
	}
	comps := make([]string, n)
	for p := e; p.parent != nil; p = p.parent {
		n--
		comps[n] = p.name
	}
	return joinPath(comps)
}

// Kind is what the entry is.
func (e *Entry) Kind() Kind { return e.kind }

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.kind == Directory }

// Ino is the entry's number, unique in its tree and the same for the same
// tree on every Open: its position in the walk of the tree in sorted order,
// directories before their contents, starting with 1 for the root. It is
// usable as an inode number.
func (e *Entry) Ino() uint64 { return e.ino }

// Parent is the directory holding the entry; nil for the root.
func (e *Entry) Parent() *Entry { return e.parent }

// Capability is a file's content; the zero capability for the others.
func (e *Entry) Capability() eris.ReadCapability { return e.cap }

// Target is a symlink's target; "" for the others.
func (e *Entry) Target() string { return e.target }

// Mode is the entry's mode as a read-only file system shows it: files 0444,
// executables 0555, directories 0555, symlinks 0777.
func (e *Entry) Mode() fs.FileMode {
	switch e.kind {
	case Directory:
		return fs.ModeDir | 0o555
	case Executable:
		return 0o555
	case Symlink:
		return fs.ModeSymlink | 0o777
	}
	return 0o444
}

// Len is the number of entries in a directory.
func (e *Entry) Len() int { return len(e.children) }

// Children returns a directory's entries sorted by name (bytewise), in a
// new slice.
func (e *Entry) Children() []*Entry { return slices.Clone(e.children) }

// All yields a directory's entries sorted by name.
func (e *Entry) All() iter.Seq[*Entry] {
	return func(yield func(*Entry) bool) {
		for _, c := range e.children {
			if !yield(c) {
				return
			}
		}
	}
}

// Child returns the entry called name in a directory, or nil.
func (e *Entry) Child(name string) *Entry {
	i, ok := sort.Find(len(e.children), func(i int) int { return strings.Compare(name, e.children[i].name) })
	if !ok {
		return nil
	}
	return e.children[i]
}

// CachedSize returns the size if it is known without fetching: always for
// directories (0) and symlinks (the target's length), for files once Size
// has fetched it.
func (e *Entry) CachedSize() (int64, bool) {
	switch e.kind {
	case Directory:
		return 0, true
	case Symlink:
		return int64(len(e.target)), true
	}
	n := e.size.Load()
	return n, n >= 0
}

// OpenOptions configure Open. The zero value is useful.
type OpenOptions struct {
	// Limits bound the index accepted; zero fields take the defaults.
	Limits Limits
	// Nodes caches the decrypted internal nodes of the index and of every
	// file read through the tree; share one between the trees of a
	// process. Nil gives the tree a cache of 8 MiB.
	Nodes *eris.NodeCache
	// Concurrency bounds the file sizes DirSizes fetches at once; 0 means 16.
	Concurrency int
	// AllowNonDeterministic accepts an index that is valid but not in the
	// deterministic CBOR encoding. By default such an index is refused: the
	// spec asks for deterministic CBOR, and a tree has exactly one index,
	// so that its URN names it.
	AllowNonDeterministic bool
	// GetterVerifies says the getter returns only verified blocks (see
	// eris.ReaderOptions.GetterVerifies), so readers need not hash them
	// again. Leave it false for a getter of unknown provenance.
	GetterVerifies bool
}

// Tree is a decoded and validated ERIS-FS tree. It is immutable and safe
// for concurrent use; file contents are read lazily through the block
// getter it was opened with.
type Tree struct {
	rc        eris.ReadCapability
	g         eris.BlockGetter
	nodes     *eris.NodeCache
	verified  bool // OpenOptions.GetterVerifies
	conc      int
	root      *Entry
	all       []*Entry // by Ino-1
	indexSize int
}

// Open fetches and decodes the index of the tree rc (itself ERIS content)
// from g, validates it, and returns the tree. Every block is verified by
// the eris reader; a hostile or malformed index is refused with an error
// matching ErrInvalidIndex or ErrLimit that names the offending path.
func Open(ctx context.Context, rc eris.ReadCapability, g eris.BlockGetter, opts OpenOptions) (*Tree, error) {
	if opts.Nodes == nil {
		opts.Nodes = eris.NewNodeCache(8 << 20)
	}
	ropts := eris.ReaderOptions{Nodes: opts.Nodes, GetterVerifies: opts.GetterVerifies}
	// The tree is built while the index arrives (the fast path of parse,
	// in the order of the index), so that little is left to do once its
	// last block is here.
	var (
		st   *indexStream
		fast chan fastTree
	)
	if !opts.AllowNonDeterministic {
		c, err := newCodec(opts.Limits, true)
		if err != nil {
			return nil, err
		}
		st = newIndexStream()
		fast = make(chan fastTree, 1)
		go func() { fast <- c.buildCanonical(st.more) }()
	}
	data, err := readIndex(ctx, rc, g, ropts, opts.Limits.withDefaults().MaxIndexSize, st.arrived)
	var f *fastTree
	if st != nil {
		st.end(data)
		built := <-fast
		f = &built
	}
	if err != nil {
		return nil, err
	}
	t, err := parseFast(data, g, opts, f)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", rc, err)
	}
	t.rc = rc
	t.verified = opts.GetterVerifies
	return t, nil
}

// indexStream hands the bytes of an index to the fast path of parse as
// they arrive.
type indexStream struct {
	mu    sync.Mutex
	cond  sync.Cond
	data  []byte
	final bool
}

func newIndexStream() *indexStream {
	s := &indexStream{}
	s.cond.L = &s.mu
	return s
}

// arrived is eris.Reader.ReadAllFunc's callback: more of the index is
// here. It may be called on a nil stream, which wants nothing early.
func (s *indexStream) arrived(prefix []byte) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.data = prefix
	s.mu.Unlock()
	s.cond.Broadcast()
}

// end says the index is complete (data), or will not be (nil).
func (s *indexStream) end(data []byte) {
	s.mu.Lock()
	s.data, s.final = data, true
	s.mu.Unlock()
	s.cond.Broadcast()
}

// more waits until more than have bytes are here, or the index is
// complete, and returns what is here and whether that is all.
func (s *indexStream) more(have int) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.data) <= have && !s.final {
		s.cond.Wait()
	}
	return s.data, s.final
}

// readIndex fetches the content of rc, at most max bytes: a level of its
// tree at a time, all the blocks of a level at once (eris.Reader.ReadAll),
// so an index costs a round trip per level and the time to carry it.
// arrived, if not nil, is given the index's bytes as they come (see
// eris.Reader.ReadAllFunc).
func readIndex(ctx context.Context, rc eris.ReadCapability, g eris.BlockGetter, ropts eris.ReaderOptions, max int64, arrived func([]byte)) ([]byte, error) {
	r, err := eris.NewReaderOptions(ctx, rc, g, ropts)
	if err != nil {
		return nil, fmt.Errorf("erisfs: open %s: %w", rc, err)
	}
	data, err := r.ReadAllFunc(ctx, max, arrived)
	if errors.Is(err, eris.ErrTooLarge) {
		return nil, fmt.Errorf("erisfs: open %s: %w: index of more than %d bytes (the limit): %v", rc, ErrLimit, max, err)
	}
	if err != nil {
		return nil, fmt.Errorf("erisfs: open %s: read index: %w", rc, err)
	}
	return data, nil
}

// parse builds a tree from index bytes.
func parse(data []byte, g eris.BlockGetter, opts OpenOptions) (*Tree, error) {
	return parseFast(data, g, opts, nil)
}

// parseFast is parse for an index the fast path has built already, if
// fast is not nil (see Open).
func parseFast(data []byte, g eris.BlockGetter, opts OpenOptions, fast *fastTree) (*Tree, error) {
	strict := !opts.AllowNonDeterministic
	c, err := newCodec(opts.Limits, strict)
	if err != nil {
		return nil, err
	}
	// An index in the deterministic encoding is read in one pass (see
	// canonical.go); any other goes the general way, which explains what
	// is wrong with it.
	var f fastTree
	switch {
	case fast != nil:
		f = *fast
	case strict:
		f = c.buildCanonical(func(int) ([]byte, bool) { return data, true })
	}
	root, all := f.root, f.all
	if !f.ok {
		ri, err := c.decode(data)
		if err != nil {
			return nil, err
		}
		if root, all, err = build(ri.items, c.limits); err != nil {
			return nil, err
		}
		if strict {
			if err := c.checkCanonical(ri); err != nil {
				return nil, err
			}
		}
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	return &Tree{g: g, nodes: opts.Nodes, conc: opts.Concurrency, root: root, all: all, indexSize: len(data)}, nil
}

// build turns items into entries, refusing duplicate paths and paths that
// use a file as a directory, then numbers them in a walk in sorted order.
func build(items []item, l Limits) (*Entry, []*Entry, error) {
	// A single-file tree: the empty path names the root itself (a store
	// item that is one file or symlink). Anything beside it would make the
	// root a directory as well.
	for _, it := range items {
		if len(it.path) == 0 && len(items) > 1 {
			return nil, nil, invalid("", "an entry for the root itself (a single-file tree) beside %d other entries", len(items)-1)
		}
	}
	b := newBuilder(len(items), len(items), l)
	for _, it := range items {
		if err := b.add(it); err != nil {
			return nil, nil, err
		}
	}
	return b.finish()
}

// builder builds a tree from the items of an index, one at a time.
type builder struct {
	l     Limits
	n     int // items in the index
	count int // entries made
	// Files and symlinks are allocated together, one per item.
	slab   []Entry
	root   *Entry
	byName map[dirName]*Entry
	// The directories of the previous item's path: chain[i] is the one
	// at chainPath[:i+1]. Entries of one directory are mostly neighbours
	// in the index, so most items find their directories here.
	chain     []*Entry
	chainPath []string
}

type dirName struct {
	dir  *Entry
	name string
}

// newBuilder returns a builder for an index of n items, allocating for
// alloc of them at first.
func newBuilder(n, alloc int, l Limits) *builder {
	return &builder{l: l, n: n, slab: make([]Entry, 0, alloc), byName: make(map[dirName]*Entry, alloc)}
}

func (b *builder) newEntry(name string, parent *Entry, kind Kind) (*Entry, error) {
	b.count++
	if b.count > b.l.MaxEntries {
		return nil, fmt.Errorf("erisfs: %w: more than %d entries, directories included", ErrLimit, b.l.MaxEntries)
	}
	var e *Entry
	if kind == Directory || len(b.slab) == cap(b.slab) {
		e = &Entry{name: name, parent: parent, kind: kind}
	} else {
		b.slab = append(b.slab, Entry{name: name, parent: parent, kind: kind})
		e = &b.slab[len(b.slab)-1]
	}
	e.size.Store(-1)
	if parent != nil {
		parent.children = append(parent.children, e)
	}
	return e, nil
}

// add adds the entry of it, and the directories its path implies.
func (b *builder) add(it item) error {
	if len(it.path) == 0 {
		// A single-file tree: the empty path names the root itself.
		if b.n > 1 {
			return invalid("", "an entry for the root itself (a single-file tree) beside %d other entries", b.n-1)
		}
		root, err := b.newEntry("", nil, it.kind)
		if err != nil {
			return err
		}
		root.cap, root.target = it.cap, it.target
		b.root = root
		return nil
	}
	if b.root == nil {
		root, err := b.newEntry("", nil, Directory)
		if err != nil {
			return err
		}
		b.root = root
	}
	dirs := it.path[:len(it.path)-1]
	k := 0
	for k < len(b.chain) && k < len(dirs) && b.chainPath[k] == dirs[k] {
		k++
	}
	b.chain, b.chainPath = b.chain[:k], b.chainPath[:k]
	dir := b.root
	if k > 0 {
		dir = b.chain[k-1]
	}
	for _, name := range dirs[k:] {
		d := b.byName[dirName{dir, name}]
		if d == nil {
			var err error
			if d, err = b.newEntry(name, dir, Directory); err != nil {
				return err
			}
			b.byName[dirName{dir, name}] = d
		} else if d.kind != Directory {
			return invalid(d.Path(), "is a %v and also a directory (prefix of %q)", d.kind, joinPath(it.path))
		}
		b.chain, b.chainPath = append(b.chain, d), append(b.chainPath, name)
		dir = d
	}
	name := it.path[len(it.path)-1]
	if old := b.byName[dirName{dir, name}]; old != nil {
		if old.kind == Directory {
			return invalid(joinPath(it.path), "is a %v and also a directory", it.kind)
		}
		return invalid(joinPath(it.path), "duplicate path")
	}
	e, err := b.newEntry(name, dir, it.kind)
	if err != nil {
		return err
	}
	e.cap, e.target = it.cap, it.target
	b.byName[dirName{dir, name}] = e
	return nil
}

// finish numbers the entries in a walk in sorted order, directories
// before their contents: the same tree gets the same numbers.
func (b *builder) finish() (*Entry, []*Entry, error) {
	if b.root == nil { // an empty index: an empty root directory
		root, err := b.newEntry("", nil, Directory)
		if err != nil {
			return nil, nil, err
		}
		b.root = root
	}
	if !b.root.IsDir() {
		b.root.ino = 1
		return b.root, []*Entry{b.root}, nil
	}
	all := make([]*Entry, 0, b.count)
	var walk func(e *Entry)
	walk = func(e *Entry) {
		all = append(all, e)
		e.ino = uint64(len(all))
		slices.SortFunc(e.children, func(a, b *Entry) int { return strings.Compare(a.name, b.name) })
		for _, c := range e.children {
			walk(c)
		}
	}
	walk(b.root)
	return b.root, all, nil
}

// Capability is the read capability of the tree's index: its URN.
func (t *Tree) Capability() eris.ReadCapability { return t.rc }

// Root is the root entry: a directory, or for a single-file tree that file
// or symlink.
func (t *Tree) Root() *Entry { return t.root }

// Len is the number of entries, root and directories included.
func (t *Tree) Len() int { return len(t.all) }

// IndexSize is the length of the encoded index in bytes.
func (t *Tree) IndexSize() int { return t.indexSize }

// ByIno returns the entry numbered ino, or nil.
func (t *Tree) ByIno(ino uint64) *Entry {
	if ino == 0 || ino > uint64(len(t.all)) {
		return nil
	}
	return t.all[ino-1]
}

// All yields every entry in Ino order: a walk in sorted order, each
// directory before its contents.
func (t *Tree) All() iter.Seq[*Entry] {
	return func(yield func(*Entry) bool) {
		for _, e := range t.all {
			if !yield(e) {
				return
			}
		}
	}
}

// Lookup returns the entry at a slash-separated path ("" or "." for the
// root) without following symlinks. A missing path gives an error matching
// fs.ErrNotExist.
func (t *Tree) Lookup(path string) (*Entry, error) {
	e := t.root
	if path == "" || path == "." {
		return e, nil
	}
	if !fs.ValidPath(path) {
		return nil, &fs.PathError{Op: "lookup", Path: path, Err: fs.ErrInvalid}
	}
	for name := range strings.SplitSeq(path, "/") {
		c := e.Child(name)
		if c == nil {
			return nil, &fs.PathError{Op: "lookup", Path: path, Err: fs.ErrNotExist}
		}
		e = c
	}
	return e, nil
}

// Open returns a reader of a file's content, sharing the tree's cache of
// internal nodes. The reader fetches nothing until read.
func (t *Tree) Open(ctx context.Context, e *Entry) (*eris.Reader, error) {
	if !e.kind.IsFile() {
		return nil, fmt.Errorf("erisfs: open %s: %w: is a %v", displayPath(e.Path()), fs.ErrInvalid, e.kind)
	}
	r, err := eris.NewReaderOptions(ctx, e.cap, t.g, eris.ReaderOptions{Nodes: t.nodes, GetterVerifies: t.verified})
	if err != nil {
		return nil, fmt.Errorf("erisfs: open %s: %w", displayPath(e.Path()), err)
	}
	return r, nil
}

// Size returns the entry's size in bytes: for a file the length of its
// content, which the index does not hold — it is fetched once from the
// content (the rightmost path of its ERIS tree) and remembered; for a
// symlink the target's length; 0 for a directory.
func (t *Tree) Size(ctx context.Context, e *Entry) (int64, error) {
	if n, ok := e.CachedSize(); ok {
		return n, nil
	}
	r, err := t.Open(ctx, e)
	if err != nil {
		return 0, err
	}
	n, err := r.SizeContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("erisfs: size of %s: %w", displayPath(e.Path()), err)
	}
	e.size.Store(n)
	return n, nil
}

// DirSizes returns the sizes of a directory's entries, in the order of
// Children, fetching those not yet known concurrently (at most
// OpenOptions.Concurrency at once).
func (t *Tree) DirSizes(ctx context.Context, dir *Entry) ([]int64, error) {
	sizes := make([]int64, len(dir.children))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(t.conc)
	for i, c := range dir.children {
		if n, ok := c.CachedSize(); ok {
			sizes[i] = n
			continue
		}
		g.Go(func() error {
			n, err := t.Size(ctx, c)
			sizes[i] = n
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return sizes, nil
}

// ReadFile returns a file's whole content.
func (t *Tree) ReadFile(ctx context.Context, e *Entry) ([]byte, error) {
	n, err := t.Size(ctx, e)
	if err != nil {
		return nil, err
	}
	r, err := t.Open(ctx, e)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	m, err := r.ReadAtContext(ctx, b, 0)
	if m == len(b) && (err == nil || err == io.EOF) {
		return b, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("erisfs: read %s: %w", displayPath(e.Path()), err)
}

// WalkBlocks visits the reference of every block of the tree: those of the
// index, then those of each distinct file content in Ino order (eris.Walk:
// internal nodes are fetched and verified, leaves only named). It is what
// pinning or counting the blocks of a whole tree needs.
func (t *Tree) WalkBlocks(ctx context.Context, visit func(ref eris.Ref, level int) error) error {
	if err := eris.Walk(ctx, t.rc, t.g, visit); err != nil {
		return fmt.Errorf("erisfs: blocks of the index: %w", err)
	}
	seen := make(map[eris.ReadCapability]bool)
	for _, e := range t.all {
		if !e.kind.IsFile() || seen[e.cap] {
			continue
		}
		seen[e.cap] = true
		if err := eris.Walk(ctx, e.cap, t.g, visit); err != nil {
			return fmt.Errorf("erisfs: blocks of %s: %w", displayPath(e.Path()), err)
		}
	}
	return nil
}
