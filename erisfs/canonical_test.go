package erisfs

import (
	"reflect"
	"testing"
)

// FuzzDecodeCanonical checks the fast path of parse against the general
// one (decode, then checkCanonical): it must accept nothing the general
// path refuses, give the same entries for what it accepts, and accept
// every index the general path accepts as deterministically encoded (else
// real trees would pay for the slow path). Its seed corpus in
// testdata/fuzz/FuzzDecodeCanonical is that of FuzzParseIndex.
func FuzzDecodeCanonical(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := newCodec(Limits{MaxEntries: 1 << 12, MaxIndexSize: 1 << 20}, true)
		if err != nil {
			t.Fatal(err)
		}
		items, fast := c.decodeCanonical(data)
		ri, err := c.decode(data)
		if err == nil {
			err = c.checkCanonical(ri)
		}
		// Arriving in parts, the same index builds the same tree.
		if len(data) > 0 {
			step := int(data[0])%97 + 1
			have := 0
			built := c.buildCanonical(func(int) ([]byte, bool) {
				have = min(len(data), have+step)
				return data[:have], have == len(data)
			})
			whole := c.buildCanonical(func(int) ([]byte, bool) { return data, true })
			if built.ok != whole.ok || built.ok && len(built.all) != len(whole.all) {
				t.Fatalf("in parts of %d bytes: built %v (%d entries), whole: %v (%d entries)", step, built.ok, len(built.all), whole.ok, len(whole.all))
			}
			for i := range built.all {
				a, b := built.all[i], whole.all[i]
				if a.Path() != b.Path() || a.kind != b.kind || a.cap != b.cap || a.target != b.target {
					t.Fatalf("in parts of %d bytes: entry %d is %q, whole: %q", step, i, a.Path(), b.Path())
				}
			}
		}
		switch {
		case fast && err != nil:
			t.Fatalf("fast path accepted an index the general path refuses: %v", err)
		case !fast && err == nil:
			t.Fatalf("fast path refused a deterministically encoded index of %d entries", len(ri.items))
		case fast && !reflect.DeepEqual(items, ri.items):
			t.Fatalf("fast path decoded\n%+v\nthe general path\n%+v", items, ri.items)
		}
	})
}

// TestDecodeCanonical checks that real indexes take the fast path, with the
// entries the general path decodes: our vectors, generated trees, and a
// large index.
func TestDecodeCanonical(t *testing.T) {
	indexes := sampleIndexes(t, 40)
	indexes["large"] = largeIndexBytes(t, 5000)
	c, err := newCodec(Limits{}, true)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range indexes {
		t.Run(name, func(t *testing.T) {
			items, ok := c.decodeCanonical(b)
			if !ok {
				t.Fatal("refused by the fast path")
			}
			ri, err := c.decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.checkCanonical(ri); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(items, ri.items) {
				t.Fatalf("fast path decoded other entries than the general path")
			}
			// Every proper prefix is refused, by both.
			for _, cut := range []int{len(b) - 1, len(b) / 2, len(indexPrefix) + 1} {
				if _, ok := c.decodeCanonical(b[:cut]); ok && cut < len(b) {
					t.Errorf("accepted the first %d of %d bytes", cut, len(b))
				}
			}
		})
	}
}
