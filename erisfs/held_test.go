package erisfs_test

import (
	"bytes"
	"context"
	"testing"
	"testing/fstest"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/erisfs"
)

// TestHeld: counts of locally held blocks go from none to all as a file,
// then everything, is fetched; identical files count once.
func TestHeld(t *testing.T) {
	ctx := context.Background()
	fsys := fstest.MapFS{
		"bin/tool":  {Data: bytes.Repeat([]byte{1}, 100000), Mode: 0o755},
		"share/a":   {Data: []byte("same")},
		"share/b":   {Data: []byte("same")},
		"share/big": {Data: bytes.Repeat([]byte("big"), 50000)},
		"lib/link":  {Data: []byte("../share/a"), Mode: 0o777 | 1<<27},
		"lib/small": {Data: []byte("small file")},
	}
	remote := eristest.NewStore()
	rc, _, err := erisfs.EncodeFS(ctx, fsys, remote, erisfs.EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	local := eristest.NewStore()
	has := func(_ context.Context, ref eris.Ref) (bool, error) {
		_, err := local.GetBlock(ctx, ref)
		return err == nil, nil
	}
	keep := keepingGetter{remote: remote, local: local}
	tree, err := erisfs.Open(ctx, rc, keep, erisfs.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The index came through keep, and sizes fetch the rightmost path of
	// each content: some blocks are held, not all.
	h, err := tree.Held(ctx, tree.Root(), local, has)
	if err != nil {
		t.Fatal(err)
	}
	if h.Blocks == 0 || h.Blocks >= h.TotalBlocks || h.Bytes >= h.TotalBytes {
		t.Fatalf("after Open: held %+v", h)
	}
	big, _ := tree.Lookup("share/big")
	if h, _ := tree.Held(ctx, big, local, has); h.Blocks > 2 || h.TotalBlocks < 5 {
		// Size came from the remote (the rightmost path: root + last leaf).
		t.Fatalf("share/big before reading: %+v", h)
	}
	if _, err := tree.ReadFile(ctx, big); err != nil {
		t.Fatal(err)
	}
	if h, _ := tree.Held(ctx, big, local, has); !h.Complete() || h.TotalBytes != h.TotalBlocks*32768 {
		t.Fatalf("share/big after reading: %+v", h)
	}
	// share/a and share/b share one content: the directory counts it once.
	a, _ := tree.Lookup("share/a")
	share, _ := tree.Lookup("share")
	ha, _ := tree.Held(ctx, a, local, has)
	hbig, _ := tree.Held(ctx, big, local, has)
	if hshare, _ := tree.Held(ctx, share, local, has); hshare.TotalBlocks != ha.TotalBlocks+hbig.TotalBlocks {
		t.Errorf("share counts %d blocks, want %d + %d", hshare.TotalBlocks, ha.TotalBlocks, hbig.TotalBlocks)
	}
	// Fetch everything: all held.
	var caps []eris.ReadCapability
	for e := range tree.All() {
		if e.Kind().IsFile() {
			caps = append(caps, e.Capability())
		}
	}
	if _, err := eris.Prefetch(ctx, caps, keep, eris.PrefetchOptions{}); err != nil {
		t.Fatal(err)
	}
	if h, _ := tree.Held(ctx, tree.Root(), local, has); !h.Complete() {
		t.Fatalf("after prefetch: held %+v", h)
	}
}

// keepingGetter fetches from remote and keeps what it fetched in local, as
// a tiered cache does.
type keepingGetter struct{ remote, local *eristest.Store }

func (k keepingGetter) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	b, err := k.remote.GetBlock(ctx, ref)
	if err == nil {
		k.local.PutBlock(ctx, ref, b)
	}
	return b, err
}
