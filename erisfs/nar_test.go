package erisfs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
)

// narOf serializes the tree at dir as a nar (package nar, never following
// symlinks).
func narOf(t testing.TB, dir string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := nar.WriteFS(t.Context(), &b, nar.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// narOfTree opens the tree rc and serializes it as a nar through its io/fs
// view.
func narOfTree(t testing.TB, rc eris.ReadCapability, g eris.BlockGetter) []byte {
	t.Helper()
	tree, err := Open(t.Context(), rc, g, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := nar.WriteFS(t.Context(), &b, tree.FS(t.Context())); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestEncodeNar: a nar streamed through EncodeNar gives the URN of the
// unpacked tree, and the decoded tree serializes back to the same nar —
// the NarHash check a publisher does before advertising an ERIS URN.
func TestEncodeNar(t *testing.T) {
	ctx := t.Context()
	for seed := range 6 {
		r := rand.New(rand.NewPCG(uint64(seed), 3))
		s := genSpec(r, 40, 10, false)
		if seed == 0 {
			// Files larger than the in-memory threshold stream through.
			s["big/one"] = regBytes(randContent(r, 3*smallFile+5))
			s["big/two"] = node{kind: Executable, content: s["big/one"].content}
		}
		dir := s.writeDir(t)
		want, wantStats, err := EncodeDir(ctx, dir, eristest.NewStore(), EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := narOf(t, dir)
		store := eristest.NewStore()
		got, st, err := EncodeNar(ctx, bytes.NewReader(n), store, EncodeOptions{Concurrency: 3})
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("seed %d: EncodeNar %s, EncodeDir %s", seed, got, want)
		}
		if st != wantStats {
			t.Errorf("seed %d: stats\n nar %+v\n dir %+v", seed, st, wantStats)
		}
		if back := narOfTree(t, got, store); !bytes.Equal(back, n) {
			t.Errorf("seed %d: the tree's nar (%d bytes) differs from the original (%d bytes)", seed, len(back), len(n))
		}
	}
}

// TestNixStoreDump checks against an independent peer: the nar that
// nix-store --dump makes of a tree encodes to the tree's URN, and the
// decoded tree serializes back to the same bytes.
func TestNixStoreDump(t *testing.T) {
	nartest.NixStore(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(11, 11))
	s := genSpec(r, 50, 6, false)
	dir := s.writeDir(t)
	dump := nartest.NixDump(t, dir)
	want, _, err := EncodeDir(ctx, dir, eristest.NewStore(), EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	store := eristest.NewStore()
	got, _, err := EncodeNar(ctx, bytes.NewReader(dump), store, EncodeOptions{})
	if err != nil || got != want {
		t.Fatalf("EncodeNar(nix-store --dump) = %s, %v; EncodeDir %s", got, err, want)
	}
	if !bytes.Equal(narOfTree(t, got, store), dump) {
		t.Error("the decoded tree does not serialize to nix-store --dump's nar")
	}
}

// TestNarVectors runs the nar vectors of the substitutes spec through
// ERIS-FS: those ERIS-FS can hold come back with their NarHash; those it
// cannot (an empty directory) are refused naming the path.
func TestNarVectors(t *testing.T) {
	ctx := t.Context()
	for _, v := range nartest.Vectors() {
		t.Run(v.Name, func(t *testing.T) {
			root := nartest.Build(t, filepath.Join(t.TempDir(), "item"), v.Entries)
			store := eristest.NewStore()
			rc, _, err := EncodeNar(ctx, bytes.NewReader(narOf(t, root)), store, EncodeOptions{})
			if errors.Is(err, ErrUnrepresentable) {
				if !hasEmptyDir(v.Entries) {
					t.Fatalf("refused without an empty directory: %v", err)
				}
				t.Logf("refused as expected: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tree, err := Open(ctx, rc, store, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			hw := nar.NewHashingWriter(nil)
			if err := nar.WriteFS(ctx, hw, tree.FS(ctx)); err != nil {
				t.Fatal(err)
			}
			if sum := hw.Sum(); sum.Size != v.Size || !strings.HasSuffix(sum.Hash.String(), v.Nix32) {
				t.Errorf("NarHash %s (%d bytes), want %s (%d)", sum.Hash, sum.Size, v.Nix32, v.Size)
			}
		})
	}
}

func hasEmptyDir(es []nartest.Entry) bool {
	for _, d := range es {
		if d.Type != nar.Directory || d.Path == "" {
			continue
		}
		empty := true
		for _, e := range es {
			if strings.HasPrefix(e.Path, d.Path+"/") {
				empty = false
			}
		}
		if empty {
			return true
		}
	}
	return false
}

func TestEncodeNarUnrepresentable(t *testing.T) {
	ctx := t.Context()
	build := func(t *testing.T, hs ...nar.Header) []byte {
		var b bytes.Buffer
		w := nar.NewWriter(&b)
		for _, h := range hs {
			if err := w.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if h.Size > 0 {
				w.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	dir := func(p string) nar.Header { return nar.Header{Path: p, Type: nar.Directory} }
	file := func(p string) nar.Header { return nar.Header{Path: p, Type: nar.Regular, Size: 3} }
	cases := []struct {
		name    string
		nar     func(t *testing.T) []byte
		path    string
		dropped int64
		left    spec
	}{
		{"empty directory", func(t *testing.T) []byte {
			return build(t, dir(""), dir("a"), file("a/f"), dir("a/g"), file("z"))
		}, "a/g", 1, spec{"a/f": reg("xxx"), "z": reg("xxx")}},
		{"nested empty directories", func(t *testing.T) []byte {
			return build(t, dir(""), dir("a"), dir("a/b"), dir("a/b/c"), file("z"))
		}, "a/b/c", 3, spec{"z": reg("xxx")}},
		{"non-UTF-8 directory name", func(t *testing.T) []byte {
			return build(t, dir(""), dir("bad\xff"), file("bad\xff/f"), file("ok"))
		}, "bad\xff", 1, spec{"ok": reg("xxx")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.nar(t)
			_, _, err := EncodeNar(ctx, bytes.NewReader(n), eristest.NewStore(), EncodeOptions{})
			var pe *PathError
			if !errors.Is(err, ErrUnrepresentable) || !errors.As(err, &pe) || pe.Path != tc.path {
				t.Fatalf("error %v, want ErrUnrepresentable naming %q", err, tc.path)
			}
			store := eristest.NewStore()
			rc, st, err := EncodeNar(ctx, bytes.NewReader(n), store, EncodeOptions{DropUnrepresentable: true})
			if err != nil || st.Dropped != tc.dropped {
				t.Fatalf("dropping: %+v, %v", st, err)
			}
			tree, err := Open(ctx, rc, store, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tc.left.check(t, ctx, tree)
		})
	}
	t.Run("malformed", func(t *testing.T) {
		n := build(t, dir(""), file("f"))
		_, _, err := EncodeNar(ctx, bytes.NewReader(n[:len(n)-9]), eristest.NewStore(), EncodeOptions{})
		if !errors.Is(err, nar.ErrFormat) {
			t.Errorf("truncated nar: %v", err)
		}
	})
	t.Run("single file", func(t *testing.T) {
		n := build(t, nar.Header{Type: nar.Executable, Size: 3})
		store := eristest.NewStore()
		rc, _, err := EncodeNar(ctx, bytes.NewReader(n), store, EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tree, err := Open(ctx, rc, store, OpenOptions{})
		if err != nil || tree.Root().Kind() != Executable {
			t.Fatalf("tree %v, %v", tree, err)
		}
		f := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(f, []byte("xxx"), 0o755); err != nil {
			t.Fatal(err)
		}
		want, _, err := EncodeDir(ctx, f, eristest.NewStore(), EncodeOptions{})
		if err != nil || want != rc {
			t.Errorf("EncodeDir of the file: %s, %v; want %s", want, err, rc)
		}
	})
}
