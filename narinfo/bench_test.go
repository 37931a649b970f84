package narinfo_test

import (
	"context"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"erismount/cache"
	"erismount/eris/eristest"
	"erismount/erisfs"
	"erismount/narinfo"
	"erismount/narinfo/nar"
)

var copyInTree = flag.String("copyintree", "/usr/local/go/src/crypto", "directory tree the copy-in benchmarks copy")

func benchSource(b *testing.B) (string, nar.Sum) {
	b.Helper()
	if _, err := os.Stat(*copyInTree); err != nil {
		b.Skipf("benchmark tree: %v", err)
	}
	return *copyInTree, narSum(b, nar.DirFS(*copyInTree))
}

// removeTree deletes a landed store item (its directories are 0555).
func removeTree(b *testing.B, p string) {
	b.Helper()
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(p); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCopyInWarmCache is `copy-in` from a signed narinfo whose
// ERIS-FS blocks are all in the memory cache: verify the signature, open
// the tree, write it canonically into a scratch store while hashing the
// nar, rename. Judge it against BenchmarkCpA.
func BenchmarkCopyInWarmCache(b *testing.B) {
	src, sum := benchSource(b)
	ctx := context.Background()
	peer := eristest.NewStore()
	rc, _, err := erisfs.EncodeDir(ctx, src, peer, erisfs.EncodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	key, _ := narinfo.GenerateKey(nil)
	n := &narinfo.Narinfo{StorePath: "/gnu/store/" + itemBase, NarHash: sum.Hash, NarSize: sum.Size, ERIS: rc, References: []string{}}
	raw, err := n.Sign(narinfo.ERISv4, key, "bench")
	if err != nil {
		b.Fatal(err)
	}
	if n, err = narinfo.Parse(raw); err != nil {
		b.Fatal(err)
	}
	acl := narinfo.NewACL(key.Public())
	blocks := cache.NewTiered(cache.TieredOptions{Memory: cache.NewMemory(2 << 30), Remote: peer})
	store := scratchStore(b)
	// Warm the cache.
	if err := narinfo.CopyInERIS(ctx, n, acl, blocks, store, narinfo.CopyInOptions{}); err != nil {
		b.Fatal(err)
	}
	removeTree(b, filepath.Join(store, itemBase))
	peer.ResetCounts()
	b.SetBytes(sum.Size)
	b.ReportAllocs()
	for b.Loop() {
		if err := narinfo.CopyInERIS(ctx, n, acl, blocks, store, narinfo.CopyInOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		removeTree(b, filepath.Join(store, itemBase))
		b.StartTimer()
	}
	if peer.Gets() != 0 {
		b.Errorf("%d blocks fetched from the peer: the cache was not warm", peer.Gets())
	}
}

// BenchmarkCopyInFromDisk is CopyIn from a directory on disk (nar.DirFS).
func BenchmarkCopyInFromDisk(b *testing.B) {
	src, sum := benchSource(b)
	store := scratchStore(b)
	b.SetBytes(sum.Size)
	b.ReportAllocs()
	for b.Loop() {
		if err := narinfo.CopyIn(context.Background(), nar.DirFS(src), store, itemBase, sum, narinfo.CopyInOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		removeTree(b, filepath.Join(store, itemBase))
		b.StartTimer()
	}
}

// BenchmarkCpA is the baseline: `cp -a` of the same tree from disk, which
// neither verifies nor canonicalizes.
func BenchmarkCpA(b *testing.B) {
	src, sum := benchSource(b)
	if _, err := exec.LookPath("cp"); err != nil {
		b.Skip("cp is absent")
	}
	dst := filepath.Join(scratchStore(b), itemBase)
	b.SetBytes(sum.Size)
	b.ReportAllocs()
	for b.Loop() {
		if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		b.StopTimer()
		removeTree(b, dst)
		b.StartTimer()
	}
}
