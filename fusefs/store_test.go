package fusefs_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/fusefs"
	"erismount/narinfo"
	"erismount/narinfo/source"
	"erismount/tests/testenv"
)

// fakeNarinfos is a narinfo source that trusts what it holds: the store
// view's tests are about the view, the signatures are checked by the
// sources (and end to end in tests/).
type fakeNarinfos struct {
	mu    sync.Mutex
	m     map[string]*narinfo.Narinfo // by hash part
	fail  map[string]error            // answers other than a narinfo
	calls map[string]int
	list  []string
}

func newFakeNarinfos() *fakeNarinfos {
	return &fakeNarinfos{m: map[string]*narinfo.Narinfo{}, fail: map[string]error{}, calls: map[string]int{}}
}

func (f *fakeNarinfos) Narinfo(ctx context.Context, hash string) (*narinfo.Narinfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[hash]++
	if err := f.fail[hash]; err != nil {
		return nil, err
	}
	if n := f.m[hash]; n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("fake: %s: %w", hash, source.ErrUnknown)
}

func (f *fakeNarinfos) HashParts(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.list), nil
}

func (f *fakeNarinfos) add(storePath string, rc eris.ReadCapability, listed bool, refs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, base, err := narinfo.SplitStorePath(storePath)
	if err != nil {
		panic(err)
	}
	f.m[base[:32]] = &narinfo.Narinfo{StorePath: storePath, ERIS: rc, References: refs}
	if listed {
		f.list = append(f.list, base[:32])
	}
}

func (f *fakeNarinfos) callsOf(hash string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[hash]
}

// storeHash makes the i-th distinct hash part.
func storeHash(i int) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	b := []byte("1b9p07iizkg4ifnsbpwd4hcqsnivr6f0")
	for k := range 6 {
		b[31-k] = alphabet[(i>>(5*k))&31]
	}
	return string(b)
}

// mountStore mounts a store view in a temporary directory until the test
// ends.
func mountStore(t *testing.T, opts fusefs.StoreOptions) *fusefs.Store {
	t.Helper()
	testenv.RequireFUSE(t)
	if opts.Logger == nil {
		opts.Logger = testenv.Logger(t)
	}
	if opts.StoreDir == "" {
		opts.StoreDir = "/nix/store"
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := fusefs.MountStore(ctx, t.TempDir(), opts)
	if err != nil {
		cancel()
		t.Fatalf("mount the store view: %v", err)
	}
	t.Cleanup(func() {
		defer cancel()
		if err := st.Unmount(); err != nil {
			t.Errorf("%v; detaching", err)
			fusefs.Detach(st.Dir())
		}
	})
	return st
}

// TestStoreView: items appear under their base names, built from their
// narinfo on lookup, the same trees as a mount shows, and only what is
// read is fetched; what is not an item of this store is ENOENT, an
// unreachable source EIO.
func TestStoreView(t *testing.T) {
	blocks := eristest.NewStore()
	count := testenv.NewCounting(blocks)
	src := newFakeNarinfos()

	sample := testenv.Sample().WriteDir(t)
	sampleRC := testenv.Publish(t, sample, blocks)
	hello := "/nix/store/" + storeHash(1) + "-hello-2.12"
	src.add(hello, sampleRC, true)

	// An item that is one file, one known only upstream (not listed).
	one := filepath.Join(t.TempDir(), "one")
	os.WriteFile(one, []byte("#!/bin/sh\necho one\n"), 0o755)
	oneRC := testenv.Publish(t, one, blocks)
	script := "/nix/store/" + storeHash(2) + "-script.sh"
	src.add(script, oneRC, false)

	// Unusable: no ERIS, another store, a narinfo naming another item,
	// a source that fails.
	noERIS := "/nix/store/" + storeHash(3) + "-no-eris"
	src.add(noERIS, eris.ReadCapability{}, true)
	src.add("/gnu/store/"+storeHash(4)+"-guix-item", sampleRC, true)
	src.add("/nix/store/"+storeHash(5)+"-right-name", sampleRC, false)
	src.fail[storeHash(6)] = errors.New("upstream unreachable")
	src.fail[storeHash(10)] = &source.UntrustedError{HashPart: storeHash(10), Origin: "test", Reason: errors.New("bad signature")}

	st := mountStore(t, fusefs.StoreOptions{Narinfos: src, Blocks: count, Options: fusefs.Options{Local: testenv.NewLocal()}})
	dir := st.Dir()

	// The listing: the items the source lists and can be used. Names
	// only: the kind of an item (os.ReadDir asks it) needs its tree.
	names := readNames(t, dir)
	if want := []string{filepath.Base(hello)}; !slices.Equal(names, want) {
		t.Errorf("ls of the view: %q, want %q", names, want)
	}
	if n := count.Blocks(); n != 0 {
		t.Errorf("listing the view fetched %d blocks", n)
	}

	// An item is its tree, byte for byte.
	testenv.CompareDirs(t, sample, filepath.Join(dir, filepath.Base(hello)))
	// A single-file item is that file.
	b, err := os.ReadFile(filepath.Join(dir, filepath.Base(script)))
	if err != nil || string(b) != "#!/bin/sh\necho one\n" {
		t.Errorf("read %s: %q, %v", script, b, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, filepath.Base(script))); err != nil || fi.Mode().Perm() != 0o555 {
		t.Errorf("stat %s: %v, %v: want an executable", script, fi, err)
	}
	// Now it is listed too.
	if names := readNames(t, dir); len(names) != 2 {
		t.Errorf("ls after looking up %s: %q, want 2 entries", script, names)
	}

	// xattrs: the item's capability on its root.
	buf := make([]byte, 256)
	n, err := syscall.Getxattr(filepath.Join(dir, filepath.Base(hello)), fusefs.XattrURN, buf)
	if err != nil || string(buf[:n]) != sampleRC.URN() {
		t.Errorf("%s of the item: %q, %v; want %s", fusefs.XattrURN, buf[:n], err, sampleRC.URN())
	}
	if _, err := syscall.Getxattr(filepath.Join(dir, filepath.Base(hello)), fusefs.XattrLocal, buf); err != nil {
		t.Errorf("%s of the item: %v", fusefs.XattrLocal, err)
	}

	for _, c := range []struct {
		name string
		want syscall.Errno
	}{
		{"not-a-store-path", syscall.ENOENT},
		{storeHash(99) + "-unknown", syscall.ENOENT},
		{filepath.Base(noERIS), syscall.ENOENT},
		{storeHash(4) + "-guix-item", syscall.ENOENT},
		{storeHash(5) + "-wrong-name", syscall.ENOENT},
		{storeHash(1) + "-hello-2.13", syscall.ENOENT},
		{storeHash(10) + "-untrusted", syscall.ENOENT},
		{storeHash(6) + "-unreachable", syscall.EIO},
	} {
		_, err := os.Stat(filepath.Join(dir, c.name))
		if !errors.Is(err, c.want) {
			t.Errorf("stat %s: %v, want %v", c.name, err, c.want)
		}
	}
	// A negative answer is remembered: asked again, the source is not.
	calls := src.callsOf(storeHash(99))
	os.Stat(filepath.Join(dir, storeHash(99)+"-unknown"))
	os.Stat(filepath.Join(dir, storeHash(99)+"-unknown"))
	if got := src.callsOf(storeHash(99)); got != calls {
		t.Errorf("unknown name asked of the source %d times after the first, want 0", got-calls)
	}
	// A failure is not: the next lookup asks again.
	calls = src.callsOf(storeHash(6))
	os.Stat(filepath.Join(dir, storeHash(6)+"-unreachable"))
	if got := src.callsOf(storeHash(6)); got != calls+1 {
		t.Errorf("failing source asked %d times, want once more", got-calls)
	}
	s := st.StoreStats()
	if s.Items != 2 || s.Built != 2 || s.Negative < 6 || s.Failed < 1 {
		t.Errorf("stats %+v: want 2 items built, 6 or more negative, a failure", s)
	}
}

// TestStoreViewLazy: looking up an item and reading one file fetches the
// item's index and that file, not the item's other files.
func TestStoreViewLazy(t *testing.T) {
	blocks := eristest.NewStore()
	count := testenv.NewCounting(blocks)
	src := newFakeNarinfos()
	spec := testenv.Wide(4, 16, 8<<10)
	dirPath := spec.WriteDir(t)
	rc := testenv.Publish(t, dirPath, blocks)
	item := "/nix/store/" + storeHash(7) + "-wide"
	src.add(item, rc, true)
	st := mountStore(t, fusefs.StoreOptions{Narinfos: src, Blocks: count, Options: fusefs.Options{TreeAhead: -1, Readahead: -1}})

	b, err := os.ReadFile(filepath.Join(st.Dir(), filepath.Base(item), "d001/f0003"))
	if err != nil || string(b) != string(spec["d001/f0003"].Content) {
		t.Fatalf("read d001/f0003: %d bytes, %v", len(b), err)
	}
	got := count.Bytes()
	if total := spec.Bytes(); got > 64<<10 {
		t.Errorf("fetched %d bytes for one file of 8 KiB (the item holds %d)", got, total)
	}
}

// TestStoreViewTampered: a block that does not match its reference is
// never shown: the read fails with EIO.
func TestStoreViewTampered(t *testing.T) {
	blocks := eristest.NewStore()
	faulty := testenv.NewFaulty(blocks)
	t.Cleanup(faulty.Release)
	src := newFakeNarinfos()
	dirPath := testenv.Sample().WriteDir(t)
	rc := testenv.Publish(t, dirPath, blocks)
	item := "/nix/store/" + storeHash(8) + "-sample"
	src.add(item, rc, true)
	st := mountStore(t, fusefs.StoreOptions{Narinfos: src, Blocks: faulty, Options: fusefs.Options{Deadline: 2 * time.Second}})

	if _, err := os.Stat(filepath.Join(st.Dir(), filepath.Base(item), "bin/hello")); err != nil {
		t.Fatal(err)
	}
	faulty.Set(testenv.Corrupt)
	_, err := os.ReadFile(filepath.Join(st.Dir(), filepath.Base(item), "data/size-00102400"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read of a tampered file: %v, want EIO", err)
	}
	// A tampered index: the item is EIO, not some other tree.
	other := "/nix/store/" + storeHash(9) + "-other"
	src.add(other, rc, true)
	if _, err := os.Stat(filepath.Join(st.Dir(), filepath.Base(other))); !errors.Is(err, syscall.EIO) {
		t.Errorf("lookup of an item whose index is tampered: %v, want EIO", err)
	}
}

// TestStoreViewBounded: thousands of lookups, a few hundred of them of
// real items, leave at most MaxItems items held; items dropped from the
// table are forgotten by the kernel; every item still reads right when
// looked up again.
func TestStoreViewBounded(t *testing.T) {
	blocks := eristest.NewStore()
	src := newFakeNarinfos()
	const real, maxItems = 300, 16
	for i := range real {
		f := filepath.Join(t.TempDir(), "f")
		os.WriteFile(f, fmt.Appendf(nil, "item %d\n", i), 0o644)
		src.add(fmt.Sprintf("/nix/store/%s-item-%d", storeHash(i), i), testenv.Publish(t, f, blocks), false)
	}
	st := mountStore(t, fusefs.StoreOptions{Narinfos: src, Blocks: blocks, MaxItems: maxItems})
	peak := 0
	for i := range 3000 {
		var name string
		if i%10 == 0 {
			k := (i / 10) % real
			name = fmt.Sprintf("%s-item-%d", storeHash(k), k)
			b, err := os.ReadFile(filepath.Join(st.Dir(), name))
			if err != nil || string(b) != fmt.Sprintf("item %d\n", k) {
				t.Fatalf("read %s: %q, %v", name, b, err)
			}
		} else {
			name = fmt.Sprintf("%s-unknown", storeHash(100000+i))
			if _, err := os.Stat(filepath.Join(st.Dir(), name)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("stat %s: %v, want ENOENT", name, err)
			}
		}
		peak = max(peak, st.StoreStats().Items)
	}
	s := st.StoreStats()
	if peak > maxItems {
		t.Errorf("the table held %d items at most, bound %d", peak, maxItems)
	}
	// An item leaves the table either evicted or forgotten by the kernel
	// first (FORGET comes when the kernel likes): count both, not one.
	if s.Built < real || s.Items > maxItems || s.Evicted+s.Forgotten < real-maxItems {
		t.Errorf("stats %+v: want %d items built, at most %d held, %d evicted or forgotten", s, real, maxItems, real-maxItems)
	}
	// The kernel was asked to forget the evicted items; it does so in its
	// own time (FORGET requests are batched), so wait for most of them.
	deadline := time.Now().Add(30 * time.Second)
	for st.StoreStats().Forgotten < int64(real-maxItems)/2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if f := st.StoreStats().Forgotten; f < int64(real-maxItems)/2 {
		t.Errorf("the kernel forgot %d of %d evicted items", f, real-maxItems)
	}
}

// readNames lists dir without asking anything of its entries.
func readNames(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// TestStoreViewReferencesAhead: once an item is looked up, the items its
// narinfo references are built in the background, so that the program
// that goes on to use them finds them ready; a reference that is unknown
// is remembered as such; with NoReferencesAhead nothing is built ahead.
func TestStoreViewReferencesAhead(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("off=%v", off), func(t *testing.T) {
			blocks := eristest.NewStore()
			count := testenv.NewCounting(blocks)
			src := newFakeNarinfos()
			rc := testenv.Publish(t, testenv.Sample().WriteDir(t), blocks)
			dep := storeHash(21) + "-dep"
			missing := storeHash(22) + "-missing"
			top := storeHash(20) + "-top"
			src.add("/nix/store/"+dep, rc, false)
			src.add("/nix/store/"+top, rc, false, top, dep, missing)
			st := mountStore(t, fusefs.StoreOptions{Narinfos: src, Blocks: count, NoReferencesAhead: off})
			if _, err := os.Stat(filepath.Join(st.Dir(), top)); err != nil {
				t.Fatal(err)
			}
			if off {
				if s := st.StoreStats(); s.Ahead != 0 || s.Built != 1 || src.callsOf(storeHash(21)) != 0 {
					t.Errorf("stats %+v, dep asked %d times: want nothing built ahead", s, src.callsOf(storeHash(21)))
				}
				return
			}
			// Built in the background, the missing one found missing: wait
			// for both (no lookup of either).
			deadline := time.Now().Add(30 * time.Second)
			for s := st.StoreStats(); (s.Ahead < 1 || s.Negative < 1) && time.Now().Before(deadline); s = st.StoreStats() {
				time.Sleep(5 * time.Millisecond)
			}
			if s := st.StoreStats(); s.Ahead != 1 || s.Built != 2 || s.Items != 2 {
				t.Fatalf("stats %+v: want dep built ahead", s)
			}
			// The lookup of dep builds nothing more, and fetches nothing
			// more for its root.
			before := count.Blocks()
			if _, err := os.Stat(filepath.Join(st.Dir(), dep)); err != nil {
				t.Fatal(err)
			}
			if s := st.StoreStats(); s.Built != 2 || count.Blocks() != before {
				t.Errorf("lookup of dep after it was built ahead: stats %+v, %d more blocks", s, count.Blocks()-before)
			}
			if calls := src.callsOf(storeHash(22)); calls != 1 {
				t.Errorf("missing reference asked %d times, want once", calls)
			}
			if _, err := os.Stat(filepath.Join(st.Dir(), missing)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("stat of the missing reference: %v", err)
			}
			if calls := src.callsOf(storeHash(22)); calls != 1 {
				t.Errorf("missing reference asked %d times after its lookup, want once (remembered)", calls)
			}
		})
	}
}

// anyNarinfo answers every hash part with a narinfo for the same tree.
type anyNarinfo struct{ rc eris.ReadCapability }

func (a anyNarinfo) Narinfo(ctx context.Context, hash string) (*narinfo.Narinfo, error) {
	return &narinfo.Narinfo{StorePath: "/nix/store/" + hash + "-item", ERIS: a.rc}, nil
}

// BenchmarkStoreLookup: the lookup of a new item through a mounted store
// view (the kernel's request, narinfo, tree opened from a warm node cache,
// the root's attributes), against BenchmarkStoreLookupBaseline, opening
// the same tree directly.
func BenchmarkStoreLookup(b *testing.B) {
	testenv.RequireFUSE(b)
	blocks := eristest.NewStore()
	dir := testenv.Sample().WriteDir(b)
	rc := testenv.Publish(b, dir, blocks)
	nodes := eris.NewNodeCache(8 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := fusefs.MountStore(ctx, b.TempDir(), fusefs.StoreOptions{StoreDir: "/nix/store", Narinfos: anyNarinfo{rc}, Blocks: blocks, Nodes: nodes, MaxItems: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := st.Unmount(); err != nil {
			fusefs.Detach(st.Dir())
		}
	}()
	tree := testenv.OpenTree(b, rc, blocks)
	b.SetBytes(int64(tree.IndexSize()))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := os.Stat(filepath.Join(st.Dir(), storeHash(i)+"-item")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStoreLookupBaseline(b *testing.B) {
	blocks := eristest.NewStore()
	dir := testenv.Sample().WriteDir(b)
	rc := testenv.Publish(b, dir, blocks)
	nodes := eris.NewNodeCache(8 << 20)
	tree := testenv.OpenTree(b, rc, blocks)
	b.SetBytes(int64(tree.IndexSize()))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := erisfs.Open(context.Background(), rc, blocks, erisfs.OpenOptions{Nodes: nodes}); err != nil {
			b.Fatal(err)
		}
	}
}
