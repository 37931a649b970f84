package erisnar

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"erismount/erisfs"
	"erismount/narinfo/nar"
	"erismount/tests/testenv"
)

// benchTree is a store item of many small files and one large one,
// published into an in-memory store behind a per-block delay: 0 (the cost
// of decoding alone) and 200µs (a peer on a LAN, or CoAP on a loaded
// loopback).
func benchTree(b *testing.B, delay time.Duration) (*erisfs.Tree, int64) {
	b.Helper()
	fast, store := publish(b, testenv.Wide(10, 100, 3000).WriteDir(b))
	sum, err := Write(context.Background(), io.Discard, fast, Options{})
	if err != nil {
		b.Fatal(err)
	}
	tree, err := erisfs.Open(context.Background(), fast.Capability(), slowStore{store, delay}, erisfs.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return tree, sum.Size
}

var benchDelays = []time.Duration{0, 200 * time.Microsecond}

// benchNar runs write over the bench tree at every delay.
func benchNar(b *testing.B, write func(*erisfs.Tree) error) {
	for _, d := range benchDelays {
		b.Run(fmt.Sprintf("delay=%v", d), func(b *testing.B) {
			tree, size := benchTree(b, d)
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if err := write(tree); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWrite is the nar of a tree with files fetched ahead.
func BenchmarkWrite(b *testing.B) {
	benchNar(b, func(tree *erisfs.Tree) error {
		_, err := Write(context.Background(), io.Discard, tree, Options{})
		return err
	})
}

// BenchmarkWriteFS is the baseline: nar.WriteFS over the tree's io/fs
// view, one file after the other.
func BenchmarkWriteFS(b *testing.B) {
	benchNar(b, func(tree *erisfs.Tree) error {
		return nar.WriteFS(context.Background(), io.Discard, tree.FS(context.Background()))
	})
}
