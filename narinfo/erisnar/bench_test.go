package erisnar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"erismount/cache"
	"erismount/eris/eristest"
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

// BenchmarkWriteCached is the nar of a tree read through cache.Tiered over
// a real SQLite file, as substitute-server reads it: "warm" with every
// block cached, "upgrade" with an older version cached (versions(): most
// files the same) and the rest behind a remote 200µs away. "planned" is
// Write as it is; "plain" turns the plan off (FetchAhead < 0: every block
// read alone through the tiers, files ReadAhead at a time).
func BenchmarkWriteCached(b *testing.B) {
	older, newer := versions()
	newDir, oldDir := newer.WriteDir(b), older.WriteDir(b)
	remote := eristest.NewStore()
	rc := testenv.Publish(b, newDir, remote)
	dir := b.TempDir()
	seed := func(name string, src string) string {
		path := filepath.Join(dir, name)
		disk, err := cache.OpenSQLite(path, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
		if err != nil {
			b.Fatal(err)
		}
		testenv.Publish(b, src, disk)
		if err := errors.Join(disk.Flush(context.Background()), disk.Close()); err != nil {
			b.Fatal(err)
		}
		return path
	}
	seeds := map[string]string{"warm": seed("warm.sqlite", newDir), "upgrade": seed("upgrade.sqlite", oldDir)}
	plain, err := erisfs.Open(context.Background(), rc, remote, erisfs.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	size, err := Write(context.Background(), io.Discard, plain, Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, state := range []string{"warm", "upgrade"} {
		for _, mode := range []struct {
			name string
			opts Options
		}{{"planned", Options{}}, {"plain", Options{FetchAhead: -1}}} {
			b.Run(state+"/"+mode.name, func(b *testing.B) {
				b.SetBytes(size.Size)
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					path := filepath.Join(b.TempDir(), "cache.sqlite")
					if err := copyFile(seeds[state], path); err != nil {
						b.Fatal(err)
					}
					disk, err := cache.OpenSQLite(path, cache.SQLiteOptions{SoftQuota: cache.Unlimited})
					if err != nil {
						b.Fatal(err)
					}
					tiered := cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(64 << 20), Disk: disk, Remote: slowStore{remote, 200 * time.Microsecond}})
					b.StartTimer()
					tree, err := erisfs.Open(context.Background(), rc, tiered, erisfs.OpenOptions{GetterVerifies: true})
					if err != nil {
						b.Fatal(err)
					}
					sum, err := Write(context.Background(), io.Discard, tree, mode.opts)
					if err != nil || sum != size {
						b.Fatalf("Write = %v, %v; want %v", sum, err, size)
					}
					b.StopTimer()
					tiered.Close()
					disk.Close()
					b.StartTimer()
				}
			})
		}
	}
}

// copyFile copies a closed SQLite file.
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}
