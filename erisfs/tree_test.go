package erisfs

import (
	"context"
	"errors"
	"io/fs"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
)

func TestTreeAPI(t *testing.T) {
	ctx := t.Context()
	s := spec{
		"b/z":     reg("zz"),
		"b/a":     exe("aaaa"),
		"b/c/d":   regBytes(make([]byte, 40_000)),
		"a":       link("b/a"),
		"c":       reg(""),
		"b/c/e f": reg("e"),
	}
	store := eristest.NewStore()
	rc, _, tree := roundTrip(t, ctx, s.writeDir(t), store)
	if tree.Capability() != rc || tree.IndexSize() == 0 {
		t.Errorf("Capability %s, IndexSize %d", tree.Capability(), tree.IndexSize())
	}
	// Ino order: a sorted walk, directories before their contents.
	var walk []string
	for e := range tree.All() {
		walk = append(walk, e.Path())
		if tree.ByIno(e.Ino()) != e {
			t.Errorf("ByIno(%d) is not %q", e.Ino(), e.Path())
		}
	}
	want := []string{"", "a", "b", "b/a", "b/c", "b/c/d", "b/c/e f", "b/z", "c"}
	if !slices.Equal(walk, want) {
		t.Errorf("walk %q, want %q", walk, want)
	}
	if tree.Len() != len(want) || tree.ByIno(0) != nil || tree.ByIno(uint64(len(want)+1)) != nil {
		t.Error("Len or ByIno out of range")
	}
	// The same numbers on every Open.
	again, err := Open(ctx, rc, store, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for e := range tree.All() {
		if a := again.ByIno(e.Ino()); a.Path() != e.Path() {
			t.Errorf("ino %d: %q, then %q", e.Ino(), e.Path(), a.Path())
		}
	}

	b, err := tree.Lookup("b")
	if err != nil || !b.IsDir() || b.Len() != 3 || b.Parent() != tree.Root() {
		t.Fatalf("Lookup(b) = %v, %v", b, err)
	}
	var names []string
	for c := range b.All() {
		names = append(names, c.Name())
	}
	if !slices.Equal(names, []string{"a", "c", "z"}) || len(b.Children()) != 3 {
		t.Errorf("children %q", names)
	}
	if b.Child("c").Kind() != Directory || b.Child("nope") != nil {
		t.Error("Child")
	}
	for _, p := range []string{"", "."} {
		if e, err := tree.Lookup(p); err != nil || e != tree.Root() {
			t.Errorf("Lookup(%q) = %v, %v", p, e, err)
		}
	}
	if _, err := tree.Lookup("b/nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lookup(b/nope): %v", err)
	}
	if _, err := tree.Lookup("a/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lookup through a symlink: %v", err)
	}
	if _, err := tree.Lookup("/b"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Lookup(/b): %v", err)
	}
	a, _ := tree.Lookup("a")
	if a.Kind() != Symlink || a.Target() != "b/a" || !a.Capability().IsZero() || a.Mode() != fs.ModeSymlink|0o777 {
		t.Errorf("a: %v %q %v", a.Kind(), a.Target(), a.Mode())
	}
	if _, err := tree.Open(ctx, a); err == nil {
		t.Error("Open of a symlink succeeded")
	}
	if n, err := tree.Size(ctx, a); err != nil || n != 3 {
		t.Errorf("Size(symlink) = %d, %v", n, err)
	}

	// Sizes: fetched once, concurrently for a directory, then remembered.
	c, _ := tree.Lookup("b/c")
	if _, ok := c.Child("d").CachedSize(); ok {
		t.Error("size known before fetching")
	}
	sizes, err := tree.DirSizes(ctx, c)
	if err != nil || !slices.Equal(sizes, []int64{40_000, 1}) {
		t.Fatalf("DirSizes = %v, %v", sizes, err)
	}
	store.ResetCounts()
	if sizes, err := tree.DirSizes(ctx, c); err != nil || sizes[0] != 40_000 || store.Gets() != 0 {
		t.Errorf("second DirSizes = %v, %v, %d fetches", sizes, err, store.Gets())
	}
	if sizes, err := tree.DirSizes(ctx, tree.Root()); err != nil || !slices.Equal(sizes, []int64{3, 0, 0}) {
		t.Errorf("DirSizes(root) = %v, %v", sizes, err)
	}
}

// TestDirSizesConcurrent: a directory's sizes are fetched in parallel,
// bounded by OpenOptions.Concurrency.
func TestDirSizesConcurrent(t *testing.T) {
	ctx := t.Context()
	s := spec{}
	for i := range 40 {
		s[string(rune('A'+i))] = reg(string(make([]byte, i)))
	}
	store := eristest.NewStore()
	rc, _, err := EncodeDir(ctx, s.writeDir(t), store, EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{g: store, release: make(chan struct{})}
	tree, err := Open(ctx, rc, store, OpenOptions{Concurrency: 5})
	if err != nil {
		t.Fatal(err)
	}
	tree.g = g // fetch file contents through the gate
	done := make(chan error)
	go func() {
		_, err := tree.DirSizes(ctx, tree.Root())
		done <- err
	}()
	// Wait until 5 fetches are held at once, then check no more start.
	for g.waiting.Load() < 5 {
		select {
		case err := <-done:
			t.Fatalf("DirSizes ended early: %v", err)
		default:
			runtime.Gosched()
		}
	}
	if n := g.waiting.Load(); n != 5 {
		t.Errorf("%d fetches in flight, want 5", n)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g.max.Load() != 5 {
		t.Errorf("at most %d fetches at once, want 5", g.max.Load())
	}
}

// gate holds every GetBlock until release is closed, counting how many
// wait at once.
type gate struct {
	g       eris.BlockGetter
	release chan struct{}
	waiting atomic.Int64
	max     atomic.Int64
}

func (g *gate) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	n := g.waiting.Add(1)
	for {
		m := g.max.Load()
		if n <= m || g.max.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	g.waiting.Add(-1)
	return g.g.GetBlock(ctx, ref)
}

func TestOpenFailures(t *testing.T) {
	ctx := t.Context()
	s := spec{"a": reg("x"), "b/c": regBytes(make([]byte, 50_000))}
	dir := s.writeDir(t)

	t.Run("missing index block", func(t *testing.T) {
		store := eristest.NewStore()
		rc, _, err := EncodeDir(ctx, dir, store, EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		store.Delete(rc.Root())
		if _, err := Open(ctx, rc, store, OpenOptions{}); !errors.Is(err, eris.ErrNotFound) {
			t.Errorf("Open: %v, want ErrNotFound", err)
		}
	})
	t.Run("corrupt index block", func(t *testing.T) {
		store := eristest.NewStore()
		rc, _, err := EncodeDir(ctx, dir, store, EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		store.Fault = func(ref eris.Ref, b []byte) ([]byte, error) { b[7] ^= 1; return b, nil }
		if _, err := Open(ctx, rc, store, OpenOptions{}); !errors.Is(err, eris.ErrCorrupt) {
			t.Errorf("Open: %v, want ErrCorrupt", err)
		}
	})
	t.Run("corrupt file block", func(t *testing.T) {
		store := eristest.NewStore()
		_, _, tree := roundTrip(t, ctx, dir, store)
		store.Fault = func(ref eris.Ref, b []byte) ([]byte, error) { b[0] ^= 1; return b, nil }
		e, _ := tree.Lookup("b/c")
		if _, err := tree.ReadFile(ctx, e); !errors.Is(err, eris.ErrCorrupt) {
			t.Errorf("ReadFile: %v, want ErrCorrupt", err)
		}
		if _, err := fs.ReadFile(tree.FS(ctx), "b/c"); !errors.Is(err, eris.ErrCorrupt) {
			t.Errorf("fs.ReadFile: %v, want ErrCorrupt", err)
		}
		if _, ok := e.CachedSize(); ok {
			t.Error("a size was remembered from corrupt data")
		}
	})
	t.Run("not an index", func(t *testing.T) {
		store := eristest.NewStore()
		rc, err := eris.Encode(ctx, bytesReader("just some content"), store, eris.EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(ctx, rc, store, OpenOptions{}); !errors.Is(err, ErrInvalidIndex) {
			t.Errorf("Open: %v, want ErrInvalidIndex", err)
		}
	})
	t.Run("index too large", func(t *testing.T) {
		store := eristest.NewStore()
		rc, _, err := EncodeDir(ctx, dir, store, EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		store.ResetCounts()
		if _, err := Open(ctx, rc, store, OpenOptions{Limits: Limits{MaxIndexSize: 10}}); !errors.Is(err, ErrLimit) {
			t.Errorf("Open: %v, want ErrLimit", err)
		}
		if store.Gets() > 1 {
			t.Errorf("%d blocks fetched to learn the size of a one-block index", store.Gets())
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		store := eristest.NewStore()
		rc, _, err := EncodeDir(ctx, dir, store, EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := Open(cctx, rc, store, OpenOptions{}); !errors.Is(err, context.Canceled) {
			t.Errorf("Open: %v, want context.Canceled", err)
		}
	})
}

func bytesReader(s string) *strings.Reader { return strings.NewReader(s) }

func TestWalkBlocks(t *testing.T) {
	ctx := t.Context()
	s := spec{"a": regBytes(make([]byte, 70_000)), "b": regBytes(make([]byte, 70_000)), "c/d": reg("d"), "l": link("a")}
	store := eristest.NewStore()
	_, _, tree := roundTrip(t, ctx, s.writeDir(t), store)
	seen := map[eris.Ref]int{}
	if err := tree.WalkBlocks(ctx, func(ref eris.Ref, _ int) error { seen[ref]++; return nil }); err != nil {
		t.Fatal(err)
	}
	// Every stored block is named, and a and b (equal) only once.
	for _, ref := range store.Refs() {
		if seen[ref] == 0 {
			t.Errorf("block %s not visited", ref.Str())
		}
	}
	a, _ := tree.Lookup("a")
	if n := seen[a.Capability().Root()]; n != 1 {
		t.Errorf("root of a visited %d times", n)
	}
}
