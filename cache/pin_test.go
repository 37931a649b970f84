package cache_test

import (
	"context"
	"errors"
	"testing"

	"erismount/cache"
	"erismount/eris"
	"erismount/eris/eristest"
)

// flood puts n new blocks of 32 KiB, far past a small quota, and flushes.
func flood(t *testing.T, s *cache.SQLite, seed uint64, n int) {
	t.Helper()
	putAll(t, s, blocks(seed, n, eris.BlockSize32K))
	flush(t, s)
}

func pinInfo(t *testing.T, s *cache.SQLite, name string) (cache.PinInfo, bool) {
	t.Helper()
	pins, err := s.Pins(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pins {
		if p.Name == name {
			return p, true
		}
	}
	return cache.PinInfo{}, false
}

// TestPinSurvivesPressure pins blocks through a view, over a restart, then
// floods the store: the pinned blocks stay until unpinned.
func TestPinSurvivesPressure(t *testing.T) {
	ctx := context.Background()
	opts := cache.SQLiteOptions{SoftQuota: 10 * eris.BlockSize32K}
	s := openSQLite(t, opts)
	const name = "urn:eris:TESTPIN"
	pin, err := s.Pin(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	kept := blocks(1, 5, eris.BlockSize32K)
	view := pin.View(s)
	putAll(t, view, kept[:3]) // tagged as they are put
	putAll(t, s, kept[3:])
	for _, b := range kept[3:] { // tagged as they are read
		if _, err := view.GetBlock(ctx, b.ref); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, s)
	s = reopen(t, s, opts)
	flood(t, s, 1000, 30)
	for i, b := range kept {
		if !has(t, s, b.ref) {
			t.Errorf("pinned block %d evicted", i)
		}
	}
	pi, ok := pinInfo(t, s, name)
	if !ok || pi.Mount || pi.Blocks != 5 || pi.Tagged != 5 || pi.Bytes != 5*eris.BlockSize32K {
		t.Errorf("Pins: %+v (found %v); want a kept pin of 5 blocks", pi, ok)
	}
	if st := stats(t, s); st.PinnedBlocks != 5 || st.Pins != 1 || st.Bytes > opts.SoftQuota {
		t.Errorf("Stats %+v: want 5 pinned blocks in 1 pin, within the quota", st)
	}
	if err := s.Unpin(ctx, name); err != nil {
		t.Fatal(err)
	}
	flood(t, s, 2000, 30)
	for i, b := range kept {
		if has(t, s, b.ref) {
			t.Errorf("block %d still there after Unpin and a flood", i)
		}
	}
	if err := s.Unpin(ctx, name); !errors.Is(err, cache.ErrUnknownPin) {
		t.Errorf("second Unpin: %v; want ErrUnknownPin", err)
	}
}

// TestPinTagsBeforeStored: a tag may come before its block (a pin walk
// reads through Tiered, whose write-back lands later).
func TestPinTagsBeforeStored(t *testing.T) {
	ctx := context.Background()
	s := openSQLite(t, cache.SQLiteOptions{SoftQuota: 4 * eris.BlockSize32K})
	pin, err := s.Pin(ctx, "urn:early")
	if err != nil {
		t.Fatal(err)
	}
	b := blocks(1, 1, eris.BlockSize32K)[0]
	pin.Tag(b.ref)
	flush(t, s)
	putAll(t, s, []testBlock{b})
	flood(t, s, 100, 10)
	if !has(t, s, b.ref) {
		t.Error("a block tagged before it was stored was evicted")
	}
	if pi, _ := pinInfo(t, s, "urn:early"); pi.Tagged != 1 || pi.Blocks != 1 {
		t.Errorf("Pins: %+v; want 1 tagged, 1 stored", pi)
	}
}

// TestMountPin: a mounted root's blocks, read through Tiered, stay while
// the mount pin is held; Release and Close drop it.
func TestMountPin(t *testing.T) {
	ctx := context.Background()
	opts := cache.SQLiteOptions{SoftQuota: 8 * eris.BlockSize32K}
	s := openSQLite(t, opts)
	remote := eristest.NewStore()
	content := blocks(1, 6, eris.BlockSize32K)
	putAll(t, remote, content)
	tiered := cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(1 << 20), Disk: s, Remote: remote})
	defer tiered.Close()

	pin, err := s.PinMount(ctx, "urn:eris:MOUNTED")
	if err != nil {
		t.Fatal(err)
	}
	mount := pin.View(tiered)
	for _, b := range content {
		if _, err := mount.GetBlock(ctx, b.ref); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, tiered)
	flood(t, s, 100, 20)
	for i, b := range content {
		if !has(t, s, b.ref) {
			t.Errorf("block %d of the mounted root evicted", i)
		}
	}
	pi, ok := pinInfo(t, s, "urn:eris:MOUNTED")
	if !ok || !pi.Mount || pi.Owner == "" || pi.Blocks != 6 {
		t.Errorf("Pins: %+v; want a mount pin with an owner and 6 blocks", pi)
	}
	// A second mount of the same root has its own pin.
	pin2, err := s.PinMount(ctx, "urn:eris:MOUNTED")
	if err != nil {
		t.Fatal(err)
	}
	if err := pin.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if pins, _ := s.Pins(ctx); len(pins) != 1 {
		t.Errorf("after releasing one of two mount pins, %d pins", len(pins))
	}
	if err := pin.Release(ctx); err != nil {
		t.Errorf("second Release: %v", err)
	}
	flood(t, s, 200, 20)
	for i, b := range content {
		if has(t, s, b.ref) {
			t.Errorf("block %d kept after its mount pin was released", i)
		}
	}
	// Close drops the remaining mount pin.
	_ = pin2
	s = reopen(t, s, opts)
	if pins, _ := s.Pins(ctx); len(pins) != 0 {
		t.Errorf("after Close, pins %+v remain", pins)
	}
}

// TestMountPinCancelled: a mount pin whose creation is abandoned does not
// stay behind.
func TestMountPinCancelled(t *testing.T) {
	s := openSQLite(t, cache.SQLiteOptions{})
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p, err := s.PinMount(ctx, "urn:abandoned")
		if err == nil { // the writer was quicker than the cancellation
			if err := p.Release(context.Background()); err != nil {
				t.Fatal(err)
			}
		} else if !errors.Is(err, context.Canceled) {
			t.Fatalf("PinMount with a cancelled context: %v", err)
		}
	}
	flush(t, s)
	if pins, err := s.Pins(context.Background()); err != nil || len(pins) != 0 {
		t.Errorf("pins left: %+v, %v", pins, err)
	}
}
