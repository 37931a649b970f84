package cache_test

import (
	"context"
	"testing"

	"erismount/cache"
	"erismount/eris"
)

// TestSQLiteHeldBlocks asks HasBlocks and GetHeldBlocks about blocks
// committed, pending, missing and damaged, duplicates included, across
// more than one batch.
func TestSQLiteHeldBlocks(t *testing.T) {
	ctx := context.Background()
	disk := openSQLite(t, cache.SQLiteOptions{})
	committed := append(blocks(1, 700, eris.BlockSize1K), blocks(1000, 3, eris.BlockSize32K)...)
	putAll(t, disk, committed)
	flush(t, disk)
	damaged := blocks(2000, 1, eris.BlockSize1K)[0]
	putAll(t, disk, []testBlock{damaged})
	flush(t, disk)
	rawExec(t, rawDB(t, disk.Path()), `UPDATE data SET bytes = randomblob(1024) WHERE id = (SELECT id FROM blocks WHERE ref = ?)`, damaged.ref[:])
	missing := blocks(3000, 2, eris.BlockSize1K)
	pending := blocks(4000, 1, eris.BlockSize32K)[0]

	var refs []eris.Ref
	var want []*testBlock
	add := func(b *testBlock, held bool) {
		refs = append(refs, b.ref)
		if held {
			want = append(want, b)
		} else {
			want = append(want, nil)
		}
	}
	for i := range committed {
		add(&committed[i], true)
	}
	add(&committed[5], true) // a duplicate
	add(&missing[0], false)
	add(&damaged, false)
	add(&missing[1], false)
	putAll(t, disk, []testBlock{pending}) // not flushed: pending
	add(&pending, true)
	add(&pending, true)

	held, err := disk.HasBlocks(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range want {
		// A damaged copy is held until a read finds it damaged.
		if wantHeld := b != nil || refs[i] == damaged.ref; held[i] != wantHeld {
			t.Errorf("HasBlocks[%d] (%s) = %v, want %v", i, refs[i].Str(), held[i], wantHeld)
		}
	}
	got, err := disk.GetHeldBlocks(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range want {
		switch {
		case b == nil && got[i] != nil:
			t.Errorf("GetHeldBlocks[%d] (%s) returned a block, want none", i, refs[i].Str())
		case b != nil && string(got[i]) != string(b.b):
			t.Errorf("GetHeldBlocks[%d] (%s) returned other bytes", i, refs[i].Str())
		}
	}
	got[5][0] ^= 1 // each slice is the caller's own
	if got[len(committed)][0] == got[5][0] {
		t.Error("duplicates share a slice")
	}
	flush(t, disk)
	if has(t, disk, damaged.ref) {
		t.Error("the damaged copy was not deleted")
	}
}

// TestTieredHeldBlocks asks memory and disk, never the remote.
func TestTieredHeldBlocks(t *testing.T) {
	ctx := context.Background()
	bs := blocks(1, 3, eris.BlockSize1K)
	disk := openSQLite(t, cache.SQLiteOptions{})
	putAll(t, disk, bs[:1])
	flush(t, disk)
	mem := cache.NewMemory(1 << 20)
	putAll(t, mem, bs[1:2])
	remote := &countingGetter{}
	tr := newTiered(t, cache.TieredOptions{Memory: mem, Disk: disk, Remote: remote})
	refs := []eris.Ref{bs[0].ref, bs[1].ref, bs[2].ref}
	held, err := tr.HasBlocks(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	if !held[0] || !held[1] || held[2] {
		t.Errorf("HasBlocks = %v, want [true true false]", held)
	}
	got, err := tr.GetHeldBlocks(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[0]) != string(bs[0].b) || string(got[1]) != string(bs[1].b) || got[2] != nil {
		t.Error("GetHeldBlocks returned other blocks than disk and memory hold")
	}
	if remote.n != 0 {
		t.Errorf("the remote was asked %d times", remote.n)
	}
	if st := tr.Stats(); st.DiskHits != 1 || st.MemoryHits != 1 || st.DiskMisses != 1 {
		t.Errorf("Stats = %+v, want a memory hit, a disk hit, a disk miss", st)
	}
}

type countingGetter struct{ n int }

func (c *countingGetter) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	c.n++
	return nil, eris.NotFound(ref)
}
