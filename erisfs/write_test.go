package erisfs

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/narinfo/nar"
)

func TestWriteDir(t *testing.T) {
	ctx := t.Context()
	r := rand.New(rand.NewPCG(4, 4))
	s := genSpec(r, 60, 8, false)
	src := s.writeDir(t)
	store := eristest.NewStore()
	_, _, tree := roundTrip(t, ctx, src, store)
	dest := filepath.Join(t.TempDir(), "out")
	var last int64
	if err := tree.WriteDir(ctx, dest, WriteOptions{Concurrency: 3, Progress: func(n int64) { last = n }}); err != nil {
		t.Fatal(err)
	}
	// The same tree: same nar as the source (kinds, contents, targets).
	if !bytes.Equal(narOf(t, dest), narOf(t, src)) {
		t.Error("written tree differs from the source")
	}
	var bytesWant int64
	for _, n := range s {
		bytesWant += int64(len(n.content))
	}
	if last > bytesWant || last == 0 {
		t.Errorf("progress ended at %d, want between 1 and %d", last, bytesWant)
	}
	// Modes of a store item.
	err := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		want := fs.FileMode(0)
		switch {
		case d.IsDir():
			want = fs.ModeDir | 0o555
		case d.Type()&fs.ModeSymlink != 0:
			return nil
		case s[filepath.ToSlash(rel)].kind == Executable:
			want = 0o555
		default:
			want = 0o444
		}
		if info.Mode() != want {
			t.Errorf("%s: mode %v, want %v", rel, info.Mode(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Never overwrites, not even an empty directory.
	if err := tree.WriteDir(ctx, dest, WriteOptions{}); !errors.Is(err, ErrExists) {
		t.Errorf("second WriteDir: %v, want ErrExists", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.Mkdir(empty, 0o755)
	if err := tree.WriteDir(ctx, empty, WriteOptions{}); !errors.Is(err, ErrExists) {
		t.Errorf("WriteDir onto an empty directory: %v, want ErrExists", err)
	}
	RemoveTree(dest)
}

func TestWriteDirFailure(t *testing.T) {
	ctx := t.Context()
	s := spec{"a/b": regBytes(make([]byte, 100_000)), "c": reg("c"), "l": link("/etc/passwd")}
	store := eristest.NewStore()
	_, _, tree := roundTrip(t, ctx, s.writeDir(t), store)
	b, _ := tree.Lookup("a/b")
	bad := b.Capability().Root()
	store.Fault = func(ref eris.Ref, blk []byte) ([]byte, error) {
		if ref == bad {
			blk[3] ^= 1
		}
		return blk, nil
	}
	parent := t.TempDir()
	dest := filepath.Join(parent, "out")
	if err := tree.WriteDir(ctx, dest, WriteOptions{}); !errors.Is(err, eris.ErrCorrupt) {
		t.Fatalf("WriteDir with a corrupt block: %v, want ErrCorrupt", err)
	}
	if list, _ := os.ReadDir(parent); len(list) != 0 {
		t.Errorf("left behind: %v", list)
	}
}

func TestWriteDirSingleFile(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("one file"), 0o700)
	os.Symlink("../x", filepath.Join(dir, "l"))
	for _, name := range []string{"f", "l"} {
		store := eristest.NewStore()
		_, _, tree := roundTrip(t, ctx, filepath.Join(dir, name), store)
		dest := filepath.Join(t.TempDir(), "out")
		if err := tree.WriteDir(ctx, dest, WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		var want, got bytes.Buffer
		nar.WriteFS(ctx, &want, nar.DirFS(filepath.Join(dir, name)))
		nar.WriteFS(ctx, &got, nar.DirFS(dest))
		if !bytes.Equal(want.Bytes(), got.Bytes()) {
			t.Errorf("%s: written differs", name)
		}
	}
}
