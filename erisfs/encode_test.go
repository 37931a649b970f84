package erisfs

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"erismount/eris"
	"erismount/eris/eristest"
)

var long = flag.Bool("long", false, "run the long tests (more generated trees)")

func TestRoundTripGenerated(t *testing.T) {
	ctx := t.Context()
	n := 12
	if *long {
		n = 200
	}
	for seed := range n {
		r := rand.New(rand.NewPCG(uint64(seed), 6))
		s := genSpec(r, 10+r.IntN(40), 1+r.IntN(30), false)
		t.Run("", func(t *testing.T) {
			store := eristest.NewStore()
			dir := s.writeDir(t)
			rc, st, tree := roundTrip(t, ctx, dir, store)
			s.check(t, ctx, tree)
			if t.Failed() {
				t.Logf("seed %d, tree:\n%s", seed, describe(s))
				return
			}
			if st.Files+st.Symlinks != int64(len(s)) {
				t.Errorf("stats count %d files and %d symlinks, spec has %d entries", st.Files, st.Symlinks, len(s))
			}
			// Encoding the decoded tree through its io/fs view gives the
			// same URN: decode and encode are inverse.
			rc2, _, err := EncodeFS(ctx, tree.FS(ctx), eristest.NewStore(), EncodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rc2 != rc {
				t.Errorf("re-encoding the decoded tree gives %s, want %s", rc2, rc)
			}
		})
	}
}

func TestGoSourceTree(t *testing.T) {
	src := filepath.Join(os.Getenv("GOROOT"), "src")
	if os.Getenv("GOROOT") == "" {
		src = "/usr/local/go/src"
	}
	if testing.Short() {
		src = filepath.Join(src, "net")
	}
	if _, err := os.Stat(src); err != nil {
		t.Skipf("Go source tree absent: %v", err)
	}
	ctx := t.Context()
	store := eristest.NewStore()
	rc, st, tree := roundTrip(t, ctx, src, store)
	t.Logf("%s: %d files (%d executable), %d directories, %d bytes, %d distinct contents, %d dedup files (%d bytes), %d blocks, index %d bytes, %d distinct blocks",
		src, st.Files, st.Executables, st.Directories, st.Bytes, st.DistinctContents, st.DedupFiles, st.DedupBytes, st.Blocks, st.IndexBytes, store.Len())
	// Compare every file with the disk, through the io/fs view.
	view := tree.FS(ctx)
	disk := os.DirFS(src)
	files := 0
	err := fs.WalkDir(disk, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		want, err := fs.ReadFile(disk, p)
		if err != nil {
			return err
		}
		got, err := fs.ReadFile(view, p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: content differs", p)
		}
		info, _ := d.Info()
		e, err := tree.Lookup(p)
		if err != nil {
			return err
		}
		if exec := info.Mode()&0o100 != 0; exec != (e.Kind() == Executable) {
			t.Errorf("%s: kind %v, disk mode %v", p, e.Kind(), info.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if int64(files) != st.Files {
		t.Errorf("disk has %d files, stats %d", files, st.Files)
	}
	if rc.IsZero() {
		t.Fatal("zero capability")
	}
}

// TestSameURN: the URN depends on the tree alone, not on creation order,
// timestamps, owners or permission bits other than the owner's execute bit.
func TestSameURN(t *testing.T) {
	ctx := t.Context()
	r := rand.New(rand.NewPCG(7, 7))
	s := genSpec(r, 60, 6, false)
	paths := s.paths()

	a := t.TempDir()
	s.write(t, a, paths)
	want, _, err := EncodeDir(ctx, a, eristest.NewStore(), EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}

	b := t.TempDir()
	reversed := slices.Clone(paths)
	slices.Reverse(reversed)
	s.write(t, b, reversed)
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	err = filepath.WalkDir(b, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			if err := os.Chtimes(p, old, old); err != nil {
				return err
			}
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, 1234, 5678); err != nil {
				return err
			}
		}
		if d.Type().IsRegular() {
			info, _ := d.Info()
			// Other bits change, the owner's execute bit stays.
			mode := info.Mode()&0o100 | 0o600
			if err := os.Chmod(p, mode|0o011); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := EncodeDir(ctx, b, eristest.NewStore(), EncodeOptions{Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("reversed order, other times, owners and modes: %s, want %s", got, want)
	}

	// The execute bit does change it.
	for _, p := range paths {
		if s[p].kind == Regular {
			if err := os.Chmod(filepath.Join(b, filepath.FromSlash(p)), 0o700); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	flipped, _, err := EncodeDir(ctx, b, eristest.NewStore(), EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if flipped == want {
		t.Error("making a file executable did not change the URN")
	}
}

func TestDedup(t *testing.T) {
	ctx := t.Context()
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	s := spec{
		"a":         regBytes(big),
		"copy/a":    regBytes(big),
		"copy/b":    regBytes(big),
		"small":     reg("hello"),
		"x/small":   reg("hello"),
		"exec":      exe("hello"), // same content, other kind: same capability
		"unique":    reg("only once"),
		"link":      link("a"),
		"x/linked":  reg("linked"),
		"sub/dummy": reg("d"),
	}
	dir := s.writeDir(t)
	// Hard links: three paths, one file on disk.
	for _, p := range []string{"hard1", "sub/hard2"} {
		if err := os.Link(filepath.Join(dir, "x/linked"), filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
		s[p] = reg("linked")
	}
	store := eristest.NewStore()
	rc, st, tree := roundTrip(t, ctx, dir, store)
	s.check(t, ctx, tree)
	want := EncodeStats{
		Files:            11,
		Executables:      1,
		Symlinks:         1,
		Directories:      4,
		Bytes:            3*int64(len(big)) + 5*3 + 9 + 3*6 + 1,
		DistinctContents: 5, // big, hello, only once, linked, d
		DedupFiles:       6, // 2 big, 2 hello, 2 linked
		DedupBytes:       2*int64(len(big)) + 2*5 + 2*6,
		EncodedBytes:     3*int64(len(big)) + 5*3 + 9 + 6 + 1, // hard links once
		IndexBytes:       st.IndexBytes,
		Blocks:           st.Blocks,
	}
	if st != want {
		t.Errorf("stats\n got %+v\nwant %+v", st, want)
	}
	// Equal contents share a capability.
	a, _ := tree.Lookup("a")
	ca, _ := tree.Lookup("copy/b")
	if a.Capability() != ca.Capability() {
		t.Error("identical files have different capabilities")
	}
	// The blocks of the big file are stored once: 64 KiB at 32 KiB blocks
	// is 3 leaves (padding adds one) and one node.
	if n := store.Len(); n > 3+1+4+1+16 {
		t.Errorf("%d distinct blocks stored, expected dedup to keep them few", n)
	}
	_ = rc
}

func TestUnrepresentable(t *testing.T) {
	ctx := t.Context()
	base := spec{"keep/file": reg("kept"), "top": reg("top")}
	cases := []struct {
		name string
		path string // the unrepresentable entry, reported in the error
		make func(t *testing.T, full string)
		drop []string // what dropping it also drops
	}{
		{"empty directory", "keep/empty", func(t *testing.T, full string) {
			if err := os.Mkdir(full, 0o755); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"nested empty directories", "keep/e1/e2/e3", func(t *testing.T, full string) {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
		}, []string{"keep/e1"}},
		{"fifo", "keep/fifo", func(t *testing.T, full string) {
			if err := syscall.Mkfifo(full, 0o644); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		}, nil},
		{"fifo alone in a directory", "only/fifo", func(t *testing.T, full string) {
			os.MkdirAll(filepath.Dir(full), 0o755)
			if err := syscall.Mkfifo(full, 0o644); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		}, []string{"only"}},
		{"socket", "keep/sock", func(t *testing.T, full string) {
			l, err := net.Listen("unix", full)
			if err != nil {
				t.Skipf("unix socket: %v", err)
			}
			t.Cleanup(func() { l.Close() })
		}, nil},
		{"character device", "keep/null", func(t *testing.T, full string) {
			if err := syscall.Mknod(full, syscall.S_IFCHR|0o644, 1<<8|3); err != nil {
				t.Skipf("mknod (needs CAP_MKNOD): %v", err)
			}
		}, nil},
		{"non-UTF-8 name", "keep/bad\xff", func(t *testing.T, full string) {
			if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"non-UTF-8 symlink target", "keep/badlink", func(t *testing.T, full string) {
			if err := os.Symlink("target\xfe", full); err != nil {
				t.Fatal(err)
			}
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := base.writeDir(t)
			tc.make(t, filepath.Join(dir, filepath.FromSlash(tc.path)))
			_, _, err := EncodeDir(ctx, dir, eristest.NewStore(), EncodeOptions{})
			var pe *PathError
			mustHave(t, err, ErrUnrepresentable)
			if !errors.As(err, &pe) || pe.Path != tc.path {
				t.Fatalf("error %v names %q, want %q", err, pe.Path, tc.path)
			}

			var logs bytes.Buffer
			store := eristest.NewStore()
			rc, st, err := EncodeDir(ctx, dir, store, EncodeOptions{
				DropUnrepresentable: true,
				Logger:              slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatalf("with DropUnrepresentable: %v", err)
			}
			if st.Dropped == 0 || !strings.Contains(logs.String(), "WARN") || !strings.Contains(logs.String(), "path=") {
				t.Errorf("dropped %d, logs %q", st.Dropped, logs.String())
			}
			tree, err := Open(ctx, rc, store, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			base.check(t, ctx, tree)
			for _, p := range append(tc.drop, tc.path) {
				if _, err := tree.Lookup(p); err == nil {
					t.Errorf("%q still in the tree (%v)", p, err)
				}
			}
		})
	}
}

func TestEncodeLimits(t *testing.T) {
	ctx := t.Context()
	cases := []struct {
		name   string
		s      spec
		limits Limits
		path   string
	}{
		{"name length", spec{"d/" + strings.Repeat("n", 20): reg("x")}, Limits{MaxNameLen: 19}, "d/nnnn"},
		{"depth", spec{"a/b/c/d": reg("x")}, Limits{MaxDepth: 3}, "a/b/c/d"},
		{"entries", spec{"a": reg("1"), "b": reg("2"), "c": reg("3")}, Limits{MaxEntries: 3}, ""},
		{"target length", spec{"l": link(strings.Repeat("t", 30))}, Limits{MaxTargetLen: 29}, "l"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.s.writeDir(t)
			_, _, err := EncodeDir(ctx, dir, eristest.NewStore(), EncodeOptions{Limits: tc.limits, DropUnrepresentable: true})
			mustHave(t, err, ErrLimit, tc.path)
		})
	}
	t.Run("index size", func(t *testing.T) {
		dir := spec{"a": reg("1"), "b": reg("2")}.writeDir(t)
		_, _, err := EncodeDir(ctx, dir, eristest.NewStore(), EncodeOptions{Limits: Limits{MaxIndexSize: 100}})
		mustHave(t, err, ErrLimit, "index of")
	})
}

func TestSingleFileTree(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	content := bytes.Repeat([]byte("single"), 5000)
	if err := os.WriteFile(filepath.Join(dir, "file"), content, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("some/target", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	store := eristest.NewStore()

	rc, st, tree := roundTrip(t, ctx, filepath.Join(dir, "file"), store)
	if st.Files != 1 || st.Directories != 0 {
		t.Errorf("stats %+v", st)
	}
	root := tree.Root()
	if root.Kind() != Executable || root.Path() != "" || tree.Len() != 1 {
		t.Fatalf("root %v %q, %d entries", root.Kind(), root.Path(), tree.Len())
	}
	view := tree.FS(ctx)
	got, err := fs.ReadFile(view, ".")
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("ReadFile(.) = %d bytes, %v", len(got), err)
	}
	info, err := fs.Stat(view, ".")
	if err != nil || info.Mode() != 0o555 || info.Size() != int64(len(content)) {
		t.Fatalf("Stat(.) = %v, %v", info, err)
	}
	if _, err := fs.ReadDir(view, "."); err == nil {
		t.Error("ReadDir(.) of a single-file tree succeeded")
	}
	// Through the io/fs view back to the same URN.
	rc2, _, err := EncodeFS(ctx, view, eristest.NewStore(), EncodeOptions{})
	if err != nil || rc2 != rc {
		t.Errorf("EncodeFS of the view: %s, %v; want %s", rc2, err, rc)
	}

	rc, _, tree = roundTrip(t, ctx, filepath.Join(dir, "link"), store)
	if tree.Root().Kind() != Symlink || tree.Root().Target() != "some/target" {
		t.Fatalf("root %v -> %q", tree.Root().Kind(), tree.Root().Target())
	}
	view = tree.FS(ctx)
	if target, err := fs.ReadLink(view, "."); err != nil || target != "some/target" {
		t.Errorf("ReadLink(.) = %q, %v", target, err)
	}
	if _, err := view.Open("."); !errors.Is(err, ErrOutsideTree) {
		t.Errorf("Open(.) of a symlink root: %v, want ErrOutsideTree", err)
	}
	rc2, _, err = EncodeFS(ctx, view, eristest.NewStore(), EncodeOptions{})
	if err != nil || rc2 != rc {
		t.Errorf("EncodeFS of the view: %s, %v; want %s", rc2, err, rc)
	}

	// A trailing slash follows a symlink to a directory.
	if err := os.Symlink(".", filepath.Join(dir, "self")); err != nil {
		t.Fatal(err)
	}
	_, st, err = EncodeDir(ctx, filepath.Join(dir, "self")+"/", store, EncodeOptions{})
	if err != nil || st.Files != 1 || st.Symlinks != 2 {
		t.Errorf("EncodeDir(self/): %+v, %v", st, err)
	}
}

func TestEmptyRoot(t *testing.T) {
	ctx := t.Context()
	store := eristest.NewStore()
	_, st, tree := roundTrip(t, ctx, t.TempDir(), store)
	if st.Directories != 1 || tree.Len() != 1 || !tree.Root().IsDir() || tree.Root().Len() != 0 {
		t.Errorf("stats %+v, %d entries", st, tree.Len())
	}
	if err := fstest.TestFS(tree.FS(ctx)); err != nil {
		t.Error(err)
	}
}

func TestEncodeCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	dir := spec{"a": reg("x")}.writeDir(t)
	if _, _, err := EncodeDir(ctx, dir, eristest.NewStore(), EncodeOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestEncodePutError(t *testing.T) {
	dir := spec{"a": reg("x"), "b/c": reg("y")}.writeDir(t)
	boom := errors.New("disk full")
	_, _, err := EncodeDir(t.Context(), dir, failingPutter{boom}, EncodeOptions{})
	if !errors.Is(err, boom) {
		t.Errorf("put failure: %v", err)
	}
}

type failingPutter struct{ err error }

func (f failingPutter) PutBlock(context.Context, eris.Ref, []byte) error { return f.err }
