package narinfo_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"

	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
)

const itemBase = "1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-tree-1.0"

// scratchStore returns an empty store directory.
func scratchStore(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "gnu", "store")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// narSum serializes fsys.
func narSum(t testing.TB, fsys fs.FS) nar.Sum {
	t.Helper()
	hw := nar.NewHashingWriter(nil)
	if err := nar.WriteFS(context.Background(), hw, fsys); err != nil {
		t.Fatal(err)
	}
	return hw.Sum()
}

// storeEntries lists a store directory, temporary entries included.
func storeEntries(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// checkLanded checks that item is the only entry of storeDir, that its nar
// is want (by nix-hash when installed, else by our writer) and that its
// metadata is canonical (spec §4.1).
func checkLanded(t *testing.T, storeDir, item string, want nar.Sum) {
	t.Helper()
	if got := storeEntries(t, storeDir); len(got) != 1 || got[0] != item {
		t.Fatalf("store holds %v, want only %s", got, item)
	}
	p := filepath.Join(storeDir, item)
	if got := narSum(t, nar.DirFS(p)); got != want {
		t.Errorf("landed item serializes to %s, want %s", got, want)
	}
	if _, err := os.Stat("/usr/bin/nix-hash"); err == nil {
		if got := nartest.NixHash(t, p); got != want.Hash.Nix32() {
			t.Errorf("nix-hash of the landed item: %s, want %s", got, want.Hash.Nix32())
		}
	}
	err := filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(q, &st); err != nil {
			return err
		}
		if st.Mtim.Sec != 1 || st.Mtim.Nsec != 0 {
			t.Errorf("%s: mtime %d.%09d, want 1", q, st.Mtim.Sec, st.Mtim.Nsec)
		}
		perm := st.Mode & 0o7777
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			if perm != 0o555 {
				t.Errorf("%s: directory mode %o, want 555", q, perm)
			}
		case syscall.S_IFREG:
			if perm != 0o444 && perm != 0o555 {
				t.Errorf("%s: file mode %o, want 444 or 555", q, perm)
			}
		case syscall.S_IFLNK:
		default:
			t.Errorf("%s: unexpected type %o", q, st.Mode&syscall.S_IFMT)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCopyInVectors copies each spec tree (§2.3) from disk and checks the
// result against the spec's NarHash and nix-hash.
func TestCopyInVectors(t *testing.T) {
	for _, v := range nartest.Vectors() {
		t.Run(v.Name, func(t *testing.T) {
			src := nartest.Build(t, filepath.Join(t.TempDir(), "src"), v.Entries)
			hash, err := nar.ParseHash("sha256:" + v.Nix32)
			if err != nil {
				t.Fatal(err)
			}
			want := nar.Sum{Hash: hash, Size: v.Size}
			store := scratchStore(t)
			var progress int64
			opts := narinfo.CopyInOptions{Progress: func(n int64) { progress = n }}
			if err := narinfo.CopyIn(context.Background(), nar.DirFS(src), store, "/gnu/store/"+itemBase, want, opts); err != nil {
				t.Fatal(err)
			}
			checkLanded(t, store, itemBase, want)
			if progress == 0 || progress > v.Size {
				t.Errorf("last progress %d of %d", progress, v.Size)
			}
		})
	}
}

// TestCopyInOSDirFS copies a real tree through os.DirFS and an in-memory
// tree through fstest.MapFS.
func TestCopyInOSDirFS(t *testing.T) {
	src := goTree(t)
	want := narSum(t, nar.DirFS(src))
	store := scratchStore(t)
	if err := narinfo.CopyIn(context.Background(), os.DirFS(src), store, itemBase, want, narinfo.CopyInOptions{}); err != nil {
		t.Fatal(err)
	}
	checkLanded(t, store, itemBase, want)

	m := fstest.MapFS{
		"bin/hello": {Data: []byte("#!/bin/sh\n"), Mode: 0o700},
		"share/doc": {Data: []byte("doc"), Mode: 0o644},
		"lib":       {Data: []byte("bin"), Mode: fs.ModeSymlink},
	}
	want = narSum(t, m)
	store = scratchStore(t)
	if err := narinfo.CopyIn(context.Background(), m, store, itemBase, want, narinfo.CopyInOptions{}); err != nil {
		t.Fatal(err)
	}
	checkLanded(t, store, itemBase, want)
	if fi, err := os.Lstat(filepath.Join(store, itemBase, "lib")); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("symlink not created as a symlink: %v", err)
	}
}

// goTree is a real directory tree of moderate size.
func goTree(t testing.TB) string {
	dir := "/usr/local/go/src/encoding"
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no Go source tree: %v", err)
	}
	return dir
}

// corruptFS changes the contents of one file: a peer that lies.
type corruptFS struct {
	fs.FS
	victim string
}

func (c corruptFS) Open(name string) (fs.File, error) {
	f, err := c.FS.Open(name)
	if err != nil || name != c.victim {
		return f, err
	}
	return &flipFile{File: f}, nil
}

func (c corruptFS) ReadLink(name string) (string, error)   { return fs.ReadLink(c.FS, name) }
func (c corruptFS) Lstat(name string) (fs.FileInfo, error) { return fs.Lstat(c.FS, name) }

type flipFile struct {
	fs.File
	done bool
}

func (f *flipFile) Read(p []byte) (int, error) {
	n, err := f.File.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 1
		f.done = true
	}
	return n, err
}

// failFS fails reading one file after its first bytes, like a peer that
// stops answering or a block that fails verification.
type failFS struct {
	fs.FS
	victim string
	err    error
}

func (c failFS) Open(name string) (fs.File, error) {
	f, err := c.FS.Open(name)
	if err != nil || name != c.victim {
		return f, err
	}
	return &failFile{File: f, err: c.err}, nil
}

func (c failFS) ReadLink(name string) (string, error)   { return fs.ReadLink(c.FS, name) }
func (c failFS) Lstat(name string) (fs.FileInfo, error) { return fs.Lstat(c.FS, name) }

type failFile struct {
	fs.File
	err error
}

func (f *failFile) Read(p []byte) (int, error) {
	n, _ := f.File.Read(p[:1])
	if n == 0 {
		return 0, f.err
	}
	return n, nil
}

// hostileFS lists extra entries in the root directory.
type hostileFS struct {
	fstest.MapFS
	extra []fs.DirEntry
}

func (h hostileFS) ReadDir(name string) ([]fs.DirEntry, error) {
	es, err := h.MapFS.ReadDir(name)
	if name == "." {
		es = append(es, h.extra...)
	}
	return es, err
}

type fakeEntry struct{ name string }

func (e fakeEntry) Name() string               { return e.name }
func (e fakeEntry) IsDir() bool                { return false }
func (e fakeEntry) Type() fs.FileMode          { return 0 }
func (e fakeEntry) Info() (fs.FileInfo, error) { return nil, fs.ErrNotExist }

// TestCopyInNothingLands: on every kind of failure the error says what
// went wrong and the store directory stays empty.
func TestCopyInNothingLands(t *testing.T) {
	src := nartest.Build(t, filepath.Join(t.TempDir(), "src"), nartest.Tree())
	good := nar.DirFS(src)
	want := narSum(t, good)
	otherHash := want
	otherHash.Hash[0] ^= 1
	boom := errors.New("peer vanished")
	m := fstest.MapFS{"a": {Data: []byte("a")}}
	tests := []struct {
		name  string
		fsys  fs.FS
		want  nar.Sum
		match error
		ctx   func() context.Context
	}{
		{name: "altered NarHash", fsys: good, want: otherHash, match: narinfo.ErrMismatch},
		{name: "NarSize too small", fsys: good, want: nar.Sum{Hash: want.Hash, Size: 300}, match: narinfo.ErrMismatch},
		{name: "NarSize too large", fsys: good, want: nar.Sum{Hash: want.Hash, Size: want.Size + 8}, match: narinfo.ErrMismatch},
		{name: "corrupting source", fsys: corruptFS{good, "sub/x"}, want: want, match: narinfo.ErrMismatch},
		{name: "failing source", fsys: failFS{good, "a", boom}, want: want, match: boom},
		{name: "cancelled", fsys: good, want: want, match: context.Canceled, ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}},
		{name: "dot-dot entry", fsys: hostileFS{m, []fs.DirEntry{fakeEntry{".."}}}, want: narSum(t, m)},
		{name: "slash in a name", fsys: hostileFS{m, []fs.DirEntry{fakeEntry{"x/../../../etc"}}}, want: narSum(t, m)},
		{name: "duplicate entry", fsys: hostileFS{m, []fs.DirEntry{fakeEntry{"a"}}}, want: narSum(t, m)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			store := scratchStore(t)
			err := narinfo.CopyIn(ctx, tt.fsys, store, itemBase, tt.want, narinfo.CopyInOptions{})
			if err == nil || tt.match != nil && !errors.Is(err, tt.match) {
				t.Fatalf("got %v, want an error matching %v", err, tt.match)
			}
			if got := storeEntries(t, store); len(got) != 0 {
				t.Fatalf("store holds %v after a failed copy-in", got)
			}
			if outside := storeEntries(t, filepath.Dir(store)); len(outside) != 1 {
				t.Fatalf("something was written next to the store: %v", outside)
			}
		})
	}
}

func TestCopyInRefusesToOverwrite(t *testing.T) {
	src := nartest.Build(t, filepath.Join(t.TempDir(), "src"), nartest.Tree())
	want := narSum(t, nar.DirFS(src))
	t.Run("existing item", func(t *testing.T) {
		store := scratchStore(t)
		os.WriteFile(filepath.Join(store, itemBase), []byte("mine"), 0o644)
		err := narinfo.CopyIn(context.Background(), nar.DirFS(src), store, itemBase, want, narinfo.CopyInOptions{})
		if !errors.Is(err, narinfo.ErrExists) {
			t.Fatalf("got %v, want ErrExists", err)
		}
		if b, _ := os.ReadFile(filepath.Join(store, itemBase)); string(b) != "mine" {
			t.Fatal("existing item changed")
		}
	})
	t.Run("item appearing during the copy", func(t *testing.T) {
		store := scratchStore(t)
		planted := false
		opts := narinfo.CopyInOptions{Progress: func(int64) {
			if !planted {
				planted = true
				os.Mkdir(filepath.Join(store, itemBase), 0o755)
			}
		}}
		err := narinfo.CopyIn(context.Background(), nar.DirFS(src), store, itemBase, want, opts)
		if !errors.Is(err, narinfo.ErrExists) {
			t.Fatalf("got %v, want ErrExists", err)
		}
		if got := storeEntries(t, store); len(got) != 1 || got[0] != itemBase {
			t.Fatalf("store holds %v", got)
		}
		if es, _ := os.ReadDir(filepath.Join(store, itemBase)); len(es) != 0 {
			t.Fatal("the planted item was written into")
		}
	})
	t.Run("bad store path", func(t *testing.T) {
		store := scratchStore(t)
		for _, p := range []string{"../x", "/gnu/store/..", "hello", ""} {
			if err := narinfo.CopyIn(context.Background(), nar.DirFS(src), store, p, want, narinfo.CopyInOptions{}); !errors.Is(err, narinfo.ErrStorePath) {
				t.Errorf("%q: got %v, want ErrStorePath", p, err)
			}
		}
	})
	t.Run("another store directory", func(t *testing.T) {
		store := scratchStore(t) // …/gnu/store
		for _, p := range []string{"/srv/other/" + itemBase, "/nix/store/" + itemBase, "/gnu/store/x/" + itemBase} {
			err := narinfo.CopyIn(context.Background(), nar.DirFS(src), store, p, want, narinfo.CopyInOptions{})
			if !errors.Is(err, narinfo.ErrStoreDir) || !strings.Contains(err.Error(), store) {
				t.Errorf("%q into %s: got %v, want ErrStoreDir naming both", p, store, err)
			}
			if got := storeEntries(t, store); len(got) != 0 {
				t.Fatalf("store holds %v", got)
			}
		}
	})
}

// TestCopyInStopsEarlyOnHugeSource: a source larger than the signed
// NarSize is not copied to the end.
func TestCopyInStopsEarlyOnHugeSource(t *testing.T) {
	big := fstest.MapFS{"big": {Data: bytes.Repeat([]byte("x"), 1<<20)}}
	store := scratchStore(t)
	var maxSeen int64
	opts := narinfo.CopyInOptions{Progress: func(n int64) { maxSeen = max(maxSeen, n) }}
	err := narinfo.CopyIn(context.Background(), big, store, itemBase, nar.Sum{Hash: nar.Hash{1}, Size: 1000}, opts)
	var me *narinfo.MismatchError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("got %v, want a size mismatch", err)
	}
	if maxSeen > 1000 || me.Got.Size > 300<<10 {
		t.Errorf("copy went on after the signed size: progress %d, stopped at %d", maxSeen, me.Got.Size)
	}
	if got := storeEntries(t, store); len(got) != 0 {
		t.Fatalf("store holds %v", got)
	}
}
