package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"erismount/eris"
)

// Benchmarks of the hot paths, each next to its baseline:
//
//	SQLitePut, SQLiteGet     vs FilesPut, FilesGet (one file per block, same disk)
//	SQLiteGetUnverified      vs FilesGetUnverified (the storage alone, no hashing)
//	MemoryHit, TieredHit     vs MapHit (a map under a RWMutex, copying out)
//
// Run: go test -run XXX -bench . -count 3 ./cache/

// benchBlocks returns n distinct real blocks of size bytes.
func benchBlocks(n, size int) ([]eris.Ref, [][]byte) {
	r := rand.New(rand.NewPCG(uint64(n), uint64(size)))
	refs, bs := make([]eris.Ref, n), make([][]byte, n)
	for i := range bs {
		b := make([]byte, size)
		for j := 0; j < size; j += 8 {
			binary.LittleEndian.PutUint64(b[j:], r.Uint64())
		}
		refs[i], bs[i] = eris.RefOf(b), b
	}
	return refs, bs
}

// putRef gives put number i its own reference. The bytes repeat a pool,
// which neither store checks on put.
func putRef(refs []eris.Ref, i int) eris.Ref {
	r := refs[i%len(refs)]
	binary.LittleEndian.PutUint64(r[:], binary.LittleEndian.Uint64(r[:])^uint64(i/len(refs)))
	return r
}

func benchSQLite(b *testing.B) *SQLite {
	b.Helper()
	s, err := OpenSQLite(filepath.Join(b.TempDir(), "bench.sqlite"), SQLiteOptions{SoftQuota: Unlimited})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// files is the baseline store: one file per block, named by reference,
// written to a temporary name and renamed so a crash leaves no torn block.
type files struct{ dir string }

func (f files) path(ref eris.Ref) string { return filepath.Join(f.dir, ref.String()) }

func (f files) put(ref eris.Ref, b []byte) error {
	tmp := f.path(ref) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, f.path(ref))
}

func (f files) get(ref eris.Ref, verify bool) ([]byte, error) {
	b, err := os.ReadFile(f.path(ref))
	if err == nil && verify {
		err = ref.Verify(b)
	}
	return b, err
}

const benchPool = 1024 // distinct block contents for puts

func BenchmarkSQLitePut(b *testing.B) {
	refs, bs := benchBlocks(benchPool, eris.BlockSize32K)
	s := benchSQLite(b)
	ctx := context.Background()
	b.SetBytes(eris.BlockSize32K)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.PutBlock(ctx, putRef(refs, i), bs[i%len(bs)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil { // committed, like the files
		b.Fatal(err)
	}
}

// BenchmarkSQLitePutEvicting puts into a store at its quota (16 MiB soft,
// 20 MiB hard): every batch evicts, and with a hard cap of 4 MiB or more
// the writer also keeps the file within its share of the cap. Beside
// BenchmarkSQLitePut, it is the cost of eviction and of that accounting.
func BenchmarkSQLitePutEvicting(b *testing.B) {
	refs, bs := benchBlocks(benchPool, eris.BlockSize32K)
	s, err := OpenSQLite(filepath.Join(b.TempDir(), "bench.sqlite"), SQLiteOptions{SoftQuota: 16 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	for i := range 640 { // fill to the quota first
		if err := s.PutBlock(ctx, putRef(refs, 1<<40+i), bs[i%len(bs)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(eris.BlockSize32K)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.PutBlock(ctx, putRef(refs, i), bs[i%len(bs)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkFilesPut(b *testing.B) {
	refs, bs := benchBlocks(benchPool, eris.BlockSize32K)
	f := files{b.TempDir()}
	b.SetBytes(eris.BlockSize32K)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := f.put(putRef(refs, i), bs[i%len(bs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// benchGetBlocks is how many blocks random gets pick from (64 MiB).
const benchGetBlocks = 2048

// randomGets runs get on random blocks of a filled store.
func randomGets(b *testing.B, refs []eris.Ref, get func(eris.Ref) ([]byte, error)) {
	b.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	b.SetBytes(eris.BlockSize32K)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := get(refs[r.IntN(len(refs))]); err != nil {
			b.Fatal(err)
		}
	}
}

func filledSQLite(b *testing.B) (*SQLite, []eris.Ref) {
	b.Helper()
	refs, bs := benchBlocks(benchGetBlocks, eris.BlockSize32K)
	s := benchSQLite(b)
	for i := range refs {
		if err := s.PutBlock(context.Background(), refs[i], bs[i]); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s, refs
}

func filledFiles(b *testing.B) (files, []eris.Ref) {
	b.Helper()
	refs, bs := benchBlocks(benchGetBlocks, eris.BlockSize32K)
	f := files{b.TempDir()}
	for i := range refs {
		if err := f.put(refs[i], bs[i]); err != nil {
			b.Fatal(err)
		}
	}
	return f, refs
}

func BenchmarkSQLiteGet(b *testing.B) {
	s, refs := filledSQLite(b)
	ctx := context.Background()
	randomGets(b, refs, func(ref eris.Ref) ([]byte, error) { return s.GetBlock(ctx, ref) })
}

func BenchmarkFilesGet(b *testing.B) {
	f, refs := filledFiles(b)
	randomGets(b, refs, func(ref eris.Ref) ([]byte, error) { return f.get(ref, true) })
}

// BenchmarkSQLiteGetUnverified is the read query alone, without hashing.
func BenchmarkSQLiteGetUnverified(b *testing.B) {
	s, refs := filledSQLite(b)
	ctx := context.Background()
	randomGets(b, refs, func(ref eris.Ref) ([]byte, error) { return s.read(ctx, ref) })
}

func BenchmarkFilesGetUnverified(b *testing.B) {
	f, refs := filledFiles(b)
	randomGets(b, refs, func(ref eris.Ref) ([]byte, error) { return f.get(ref, false) })
}

// hitSizes are the block sizes of the hit benchmarks.
var hitSizes = []struct {
	name string
	size int
}{{"1KiB", eris.BlockSize1K}, {"32KiB", eris.BlockSize32K}}

// hits gets one of 64 held blocks at a time; every hit copies the block
// out, as the eris.BlockGetter contract requires.
func hits(b *testing.B, size int, get func(eris.Ref) ([]byte, error)) {
	b.Helper()
	refs, _ := benchBlocks(64, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := get(refs[i%len(refs)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMapHit(b *testing.B) {
	for _, sz := range hitSizes {
		b.Run(sz.name, func(b *testing.B) {
			var mu sync.RWMutex
			m := make(map[eris.Ref][]byte)
			refs, bs := benchBlocks(64, sz.size)
			for i := range refs {
				m[refs[i]] = bs[i]
			}
			hits(b, sz.size, func(ref eris.Ref) ([]byte, error) {
				mu.RLock()
				blk := m[ref]
				mu.RUnlock()
				return bytes.Clone(blk), nil
			})
		})
	}
}

// filledMemory holds the 64 blocks hits asks for.
func filledMemory(size int) *Memory {
	m := NewMemory(1 << 30)
	refs, bs := benchBlocks(64, size)
	for i := range refs {
		m.add(refs[i], bs[i])
	}
	return m
}

func BenchmarkMemoryHit(b *testing.B) {
	for _, sz := range hitSizes {
		b.Run(sz.name, func(b *testing.B) {
			m := filledMemory(sz.size)
			ctx := context.Background()
			hits(b, sz.size, func(ref eris.Ref) ([]byte, error) { return m.GetBlock(ctx, ref) })
		})
	}
}

// BenchmarkTieredHit is a memory hit through Tiered over SQLite, which
// includes refreshing the block's access time on disk.
func BenchmarkTieredHit(b *testing.B) {
	for _, sz := range hitSizes {
		b.Run(sz.name, func(b *testing.B) {
			m := filledMemory(sz.size)
			t := NewTiered(TieredOptions{Memory: m, Disk: benchSQLite(b)})
			defer t.Close()
			ctx := context.Background()
			hits(b, sz.size, func(ref eris.Ref) ([]byte, error) { return t.GetBlock(ctx, ref) })
		})
	}
}

// BenchmarkSQLiteGetHeld reads random blocks 64 at a time with
// GetHeldBlocks, verified as GetBlock verifies: beside BenchmarkSQLiteGet,
// what a query per block costs.
func BenchmarkSQLiteGetHeld(b *testing.B) {
	s, refs := filledSQLite(b)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	batch := make([]eris.Ref, getBatch)
	b.SetBytes(eris.BlockSize32K)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		for k := range batch {
			batch[k] = refs[r.IntN(len(refs))]
		}
		got, err := s.GetHeldBlocks(ctx, batch)
		if err != nil || got[0] == nil {
			b.Fatal(err)
		}
	}
}
