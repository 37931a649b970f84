package fusefs_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"erismount/eris"
	"erismount/erisfs"
	"erismount/fusefs"
	"erismount/tests/testenv"
)

// TestLazy: reading one small file of a large tree fetches the tree's
// index and that file's blocks, nothing else. The counting getter under
// the tree proves it; the read amplification (bytes fetched / bytes read)
// is logged.
func TestLazy(t *testing.T) {
	testenv.RequireFUSE(t)
	ctx := context.Background()
	spec := testenv.Wide(10, 100, 3000) // 1000 files of 3000 bytes, and a 4 MiB one
	p := publish(t, spec)
	index, err := testenv.ContentRefs(ctx, p.rc, p.store)
	if err != nil {
		t.Fatal(err)
	}
	atOpen, blocksAtOpen := p.count.Bytes(), p.count.Blocks()
	srv := testenv.Mount(t, p.tree, fusefs.Options{})

	const name = "d003/f0042"
	e, _ := p.tree.Lookup(name)
	fileRefs, err := testenv.ContentRefs(ctx, e.Capability(), p.store)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(srv.Dir(), name))
	if err != nil || !bytes.Equal(got, spec[name].Content) {
		t.Fatalf("read %s: %d bytes, %v", name, len(got), err)
	}
	fetched := p.count.Refs()
	for ref := range fetched {
		if !index[ref] && !fileRefs[ref] {
			t.Errorf("fetched block %s, which is neither the index's nor %s's", ref.Str(), name)
		}
	}
	for ref := range fileRefs {
		if fetched[ref] == 0 {
			t.Errorf("block %s of %s not fetched, yet the read succeeded", ref.Str(), name)
		}
	}
	read := int64(len(got))
	t.Logf("tree of %d files, %d bytes, index %d bytes in %d blocks", len(spec), spec.Bytes(), p.tree.IndexSize(), len(index))
	t.Logf("opening the tree fetched %d bytes in %d blocks; reading %s (%d bytes) fetched %d bytes in %d blocks: amplification %.2f for the file, %.2f with the index",
		atOpen, blocksAtOpen, name, read, p.count.Bytes()-atOpen, p.count.Blocks()-blocksAtOpen,
		float64(p.count.Bytes()-atOpen)/float64(read), float64(p.count.Bytes())/float64(read))
}

// TestLazyRange: reading 64 KiB from the middle of a 4 MiB file fetches
// only blocks of that file (kernel readahead included), and far fewer
// than the whole file.
func TestLazyRange(t *testing.T) {
	testenv.RequireFUSE(t)
	ctx := context.Background()
	spec := testenv.Wide(2, 10, 3000)
	p := publish(t, spec)
	srv := testenv.Mount(t, p.tree, fusefs.Options{})
	e, _ := p.tree.Lookup("big/blob")
	fileRefs, err := testenv.ContentRefs(ctx, e.Capability(), p.store)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(srv.Dir(), "big/blob"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p.count.Reset()
	buf := make([]byte, 64<<10)
	const off = 2<<20 + 12345
	if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, spec["big/blob"].Content[off:off+len(buf)]) {
		t.Fatalf("ReadAt: %v", err)
	}
	for ref := range p.count.Refs() {
		if !fileRefs[ref] {
			t.Errorf("fetched block %s, not of big/blob", ref.Str())
		}
	}
	if p.count.Bytes() > int64(len(spec["big/blob"].Content))/4 {
		t.Errorf("fetched %d bytes for a read of %d from a %d-byte file", p.count.Bytes(), len(buf), len(spec["big/blob"].Content))
	}
	t.Logf("read %d bytes at %d: fetched %d bytes in %d blocks, amplification %.2f (kernel readahead included)",
		len(buf), off, p.count.Bytes(), p.count.Blocks(), float64(p.count.Bytes())/float64(len(buf)))
}

// TestReadahead: a sequential reader is served from prefetched chunks, a
// random one gets correct bytes too, and no leaf is fetched twice by a
// sequential read.
func TestReadahead(t *testing.T) {
	testenv.RequireFUSE(t)
	ctx := context.Background()
	spec := testenv.Spec{"big": testenv.Bytes(testenv.Random(11, 12<<20+5))}
	for _, tc := range []struct {
		name      string
		readahead int
	}{
		{"ours", 0},
		{"kernel only", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := publish(t, spec)
			leaves := map[eris.Ref]bool{}
			e, _ := p.tree.Lookup("big")
			if err := eris.Walk(ctx, e.Capability(), p.store, func(ref eris.Ref, level int) error {
				if level == 0 {
					leaves[ref] = true
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			srv := testenv.Mount(t, p.tree, fusefs.Options{Readahead: tc.readahead})
			path := filepath.Join(srv.Dir(), "big")
			if _, err := os.Stat(path); err != nil {
				t.Fatal(err)
			}
			p.count.Reset()
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, spec["big"].Content) {
				t.Fatalf("sequential read: %d bytes, %v", len(got), err)
			}
			twice := 0
			for ref, n := range p.count.Refs() {
				if leaves[ref] && n > 1 {
					twice++
				}
			}
			st := srv.Stats()
			t.Logf("%s: %+v; %d blocks fetched for %d leaves, %d leaves fetched more than once", tc.name, st, p.count.Blocks(), len(leaves), twice)
			if twice > 0 {
				t.Errorf("%d leaves fetched more than once by one sequential read", twice)
			}
			if tc.readahead >= 0 && st.ReadaheadHits < int64(len(got))/2 {
				t.Errorf("readahead served %d of %d bytes", st.ReadaheadHits, len(got))
			}
			if tc.readahead < 0 && st.ReadaheadBytes != 0 {
				t.Errorf("readahead off, yet %d bytes prefetched", st.ReadaheadBytes)
			}

			// Random 4 KiB reads through a new descriptor (and past the
			// kernel's page cache: O_DIRECT is not supported, so drop
			// nothing and just check the bytes).
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r := rand.New(rand.NewPCG(1, 2))
			buf := make([]byte, 4096)
			for range 200 {
				off := r.Int64N(int64(len(got)))
				n, err := f.ReadAt(buf, off)
				if n == 0 || !bytes.Equal(buf[:n], spec["big"].Content[off:off+int64(n)]) {
					t.Fatalf("ReadAt(%d): %d bytes, %v, content differs", off, n, err)
				}
			}
		})
	}
}

// TestTreeAhead: a reader that opens files one after another in the tree's
// order (as tar does) gets the files that follow fetched ahead into the
// block cache, so that reading them later fetches nothing; nothing before
// the first file it opened is fetched.
func TestTreeAhead(t *testing.T) {
	testenv.RequireFUSE(t)
	ctx := context.Background()
	spec := testenv.Wide(1, 60, 3000) // big/blob, then d000/f0000…f0059 in entry order
	p := publish(t, spec)
	c := testenv.NewCache(t, p.count)
	tree, err := erisfs.Open(ctx, p.rc, c, erisfs.OpenOptions{GetterVerifies: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := testenv.Mount(t, tree, fusefs.Options{})
	read := func(name string) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(srv.Dir(), name))
		if err != nil || !bytes.Equal(got, spec[name].Content) {
			t.Fatalf("read %s: %d bytes, %v", name, len(got), err)
		}
	}
	for i := range 3 {
		read(fmt.Sprintf("d000/f%04d", i))
	}
	// The remaining 57 files arrive in the background.
	deadline := time.Now().Add(20 * time.Second)
	for srv.Stats().TreeAheadFiles < 57 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := srv.Stats()
	if st.TreeAheadFiles != 57 || st.TreeAheadBytes != 57*3000 {
		t.Fatalf("tree-ahead fetched %d files, %d bytes; want the 57 that follow, %d bytes", st.TreeAheadFiles, st.TreeAheadBytes, 57*3000)
	}
	blob, _ := tree.Lookup("big/blob")
	blobRefs, err := testenv.ContentRefs(ctx, blob.Capability(), p.store)
	if err != nil {
		t.Fatal(err)
	}
	for ref := range p.count.Refs() {
		if blobRefs[ref] {
			t.Fatalf("block %s of big/blob fetched: it comes before the files read", ref.Str())
		}
	}
	p.count.Reset()
	for i := 3; i < 60; i++ {
		read(fmt.Sprintf("d000/f%04d", i))
	}
	if n := p.count.Blocks(); n != 0 {
		t.Errorf("reading the prefetched files fetched %d more blocks", n)
	}
	t.Logf("%+v", srv.Stats())
}

// TestTreeAheadOff: with TreeAhead negative, a pass through the tree
// prefetches nothing.
func TestTreeAheadOff(t *testing.T) {
	testenv.RequireFUSE(t)
	spec := testenv.Wide(1, 10, 3000)
	p := publish(t, spec)
	srv := testenv.Mount(t, p.tree, fusefs.Options{TreeAhead: -1})
	for i := range 5 {
		name := fmt.Sprintf("d000/f%04d", i)
		if got, err := os.ReadFile(filepath.Join(srv.Dir(), name)); err != nil || !bytes.Equal(got, spec[name].Content) {
			t.Fatalf("read %s: %d bytes, %v", name, len(got), err)
		}
	}
	if st := srv.Stats(); st.TreeAheadFiles != 0 {
		t.Errorf("tree-ahead off, yet %d files prefetched", st.TreeAheadFiles)
	}
	e, _ := p.tree.Lookup("d000/f0009")
	refs, err := testenv.ContentRefs(context.Background(), e.Capability(), p.store)
	if err != nil {
		t.Fatal(err)
	}
	for ref := range p.count.Refs() {
		if refs[ref] {
			t.Errorf("block %s of d000/f0009, never opened, was fetched", ref.Str())
		}
	}
}

// TestExecutableFetchedWhole: opening an executable (as running it does)
// fetches all of it in the background, so the page faults of the program
// find its blocks local; opening a regular file of the same size does not.
func TestExecutableFetchedWhole(t *testing.T) {
	testenv.RequireFUSE(t)
	ctx := context.Background()
	content := testenv.Random(5, 3<<20+17)
	spec := testenv.Spec{
		"bin/prog":  {Kind: erisfs.Executable, Content: content},
		"share/dat": testenv.Bytes(content[1:]),
	}
	p := publish(t, spec)
	c := testenv.NewCache(t, p.count)
	tree, err := erisfs.Open(ctx, p.rc, c, erisfs.OpenOptions{GetterVerifies: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := testenv.Mount(t, tree, fusefs.Options{Readahead: -1})
	refsOf := func(name string) map[eris.Ref]bool {
		e, _ := tree.Lookup(name)
		refs, err := testenv.ContentRefs(ctx, e.Capability(), p.store)
		if err != nil {
			t.Fatal(err)
		}
		return refs
	}

	// A regular file: opening it fetches its size, not its content.
	f, err := os.Open(filepath.Join(srv.Dir(), "share/dat"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	dat := refsOf("share/dat")
	fetched := 0
	for ref := range p.count.Refs() {
		if dat[ref] {
			fetched++
		}
	}
	// Its size is known from its rightmost path: level+1 blocks.
	if level := tree.Root().Child("share").Child("dat").Capability().Level(); fetched > level+1 {
		t.Errorf("opening a regular file fetched %d of its %d blocks, want at most %d", fetched, len(dat), level+1)
	}

	// The executable: all of it arrives without a read.
	f, err = os.Open(filepath.Join(srv.Dir(), "bin/prog"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prog := refsOf("bin/prog")
	missing := func() int {
		n := 0
		got := p.count.Refs()
		for ref := range prog {
			if got[ref] == 0 {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for missing() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := missing(); n > 0 {
		t.Fatalf("%d of the executable's %d blocks not fetched after its open", n, len(prog))
	}
	for srv.Stats().TreeAheadFiles < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	before := p.count.Blocks()
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("read the executable: %d bytes, %v", len(got), err)
	}
	if n := p.count.Blocks() - before; n != 0 {
		t.Errorf("reading the fetched executable fetched %d more blocks", n)
	}
}

// TestListingFetchesNothing: walking the whole tree (ls -R; READDIRPLUS
// listings) fetches no block beyond the index: files go without
// attributes in a listing until their size is known. Afterwards every
// entry still stats, reads and resolves as its source, and the
// directories and symlinks the listings described need no LOOKUP.
func TestListingFetchesNothing(t *testing.T) {
	testenv.RequireFUSE(t)
	p := publish(t, testenv.Sample())
	srv := testenv.Mount(t, p.tree, fusefs.Options{})
	before := p.count.Blocks()
	var walked int
	err := filepath.WalkDir(srv.Dir(), func(path string, d os.DirEntry, err error) error {
		walked++
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if walked != p.tree.Len() {
		t.Errorf("walked %d entries, the tree has %d", walked, p.tree.Len())
	}
	if n := p.count.Blocks() - before; n != 0 {
		t.Errorf("listing every directory fetched %d blocks, want none", n)
	}
	testenv.CompareDirs(t, p.src, srv.Dir())
	// Listed again once every size is known, files come with attributes.
	if _, err := os.ReadDir(filepath.Join(srv.Dir(), "share/doc")); err != nil {
		t.Fatal(err)
	}
	testenv.CompareDirs(t, p.src, srv.Dir())
}

// TestSmallFileWithItsSize: looking up a file under 16 KiB fetches all of
// it (its size needs its last leaf; the other leaves come in the same
// round trip), so reading it afterwards fetches nothing more; a larger
// file's lookup fetches only the path to its last leaf.
func TestSmallFileWithItsSize(t *testing.T) {
	testenv.RequireFUSE(t)
	spec := testenv.Spec{
		"small": testenv.Bytes(testenv.Random(1, 5000)),   // 5 leaves of 1 KiB under a node
		"large": testenv.Bytes(testenv.Random(2, 100000)), // 4 leaves of 32 KiB under a node
	}
	p := publish(t, spec)
	srv := testenv.Mount(t, p.tree, fusefs.Options{Readahead: -1, TreeAhead: -1})
	ctx := context.Background()
	for _, name := range []string{"small", "large"} {
		e, _ := p.tree.Lookup(name)
		refs, err := testenv.ContentRefs(ctx, e.Capability(), p.store)
		if err != nil {
			t.Fatal(err)
		}
		before := p.count.Refs()
		fi, err := os.Stat(filepath.Join(srv.Dir(), name))
		if err != nil || fi.Size() != int64(len(spec[name].Content)) {
			t.Fatalf("stat %s: %v, %v", name, fi, err)
		}
		got := 0
		for ref, n := range p.count.Refs() {
			if n > before[ref] {
				if !refs[ref] {
					t.Errorf("stat %s fetched block %s, not one of its own", name, ref.Str())
				}
				got++
			}
		}
		want := 2 // the node and the last leaf
		if name == "small" {
			want = len(refs)
		}
		if got != want {
			t.Errorf("stat %s fetched %d of its %d blocks, want %d", name, got, len(refs), want)
		}
	}
}
