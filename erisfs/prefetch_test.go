package erisfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
)

// TestLeavesAndOpenVia: Leaves names a file's leaves as a walk of its
// content does, at every size around the block boundaries; OpenVia reads
// the content through the getter given; a directory is refused.
func TestLeavesAndOpenVia(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for i, n := range append(boundarySizes, 600<<10) {
		b := make([]byte, n)
		for k := range b {
			b[k] = byte(k*7 + i)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store := eristest.NewStore()
	_, _, tree := roundTrip(t, ctx, dir, store)
	for e := range tree.All() {
		if !e.Kind().IsFile() {
			if _, err := tree.Leaves(ctx, e, nil); !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("Leaves of the directory %q: %v, want fs.ErrInvalid", e.Path(), err)
			}
			continue
		}
		var want []eris.Ref
		eris.Walk(ctx, e.Capability(), store, func(ref eris.Ref, level int) error {
			if level == 0 {
				want = append(want, ref)
			}
			return nil
		})
		got, err := tree.Leaves(ctx, e, nil)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: Leaves gives %d leaves unlike the walk's %d", e.Path(), len(got), len(want))
		}
		counting := &countingGetter{g: store}
		r, err := tree.OpenVia(ctx, e, counting)
		if err != nil {
			t.Fatal(err)
		}
		size, err := tree.Size(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, size)
		if n, err := r.ReadAtContext(ctx, buf, 0); n != int(size) {
			t.Fatalf("%s: read %d of %d bytes: %v", e.Path(), n, size, err)
		}
		want2, _ := os.ReadFile(filepath.Join(dir, e.Path()))
		if string(buf) != string(want2) {
			t.Errorf("%s: OpenVia read other bytes", e.Path())
		}
		if size > 0 && counting.n.Load() == 0 {
			t.Errorf("%s: OpenVia did not read through the getter given", e.Path())
		}
	}
}

type countingGetter struct {
	g eris.BlockGetter
	n atomic.Int64
}

func (c *countingGetter) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	c.n.Add(1)
	return c.g.GetBlock(ctx, ref)
}
