package erisfs

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"erismount/eris"
	"erismount/eris/eristest"
	"erismount/narinfo/nar"
)

// benchTree is the real tree the encoding benchmarks publish: the Go
// command sources, thousands of mostly small files.
func benchTree(b *testing.B) string {
	dir := filepath.Join(runtime.GOROOT(), "src", "cmd")
	if _, err := os.Stat(dir); err != nil {
		b.Skipf("Go source tree absent: %v", err)
	}
	return dir
}

// discard drops blocks: the benchmarks measure encoding,
// not a store.
type discard struct{}

func (d *discard) PutBlock(context.Context, eris.Ref, []byte) error { return nil }

// treeBytes returns the contents of every file of dir concatenated.
func treeBytes(b *testing.B, dir string) []byte {
	var all bytes.Buffer
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		all.Write(data)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return all.Bytes()
}

// BenchmarkEncodeDir publishes a real tree (the files are in the page cache
// after the first iteration). Judge it against BenchmarkEncodeConcatLimit.
func BenchmarkEncodeDir(b *testing.B) {
	dir := benchTree(b)
	size := int64(len(treeBytes(b, dir)))
	b.SetBytes(size)
	b.ReportAllocs()
	var st EncodeStats
	for b.Loop() {
		var err error
		_, st, err = EncodeDir(b.Context(), dir, &discard{}, EncodeOptions{})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(st.Files), "files")
}

// BenchmarkEncodeNar publishes the same tree from an in-memory nar.
func BenchmarkEncodeNar(b *testing.B) {
	dir := benchTree(b)
	var n bytes.Buffer
	if err := nar.WriteFS(b.Context(), &n, nar.DirFS(dir)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(treeBytes(b, dir))))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := EncodeNar(b.Context(), bytes.NewReader(n.Bytes()), &discard{}, EncodeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeConcatLimit is the limit of BenchmarkEncodeDir and
// BenchmarkEncodeNar: plain eris.Encode of the tree's bytes concatenated,
// from memory, on all cores.
func BenchmarkEncodeConcatLimit(b *testing.B) {
	all := treeBytes(b, benchTree(b))
	b.SetBytes(int64(len(all)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eris.Encode(b.Context(), bytes.NewReader(all), &discard{}, eris.EncodeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// largeIndexBytes is the index of a tree of n files (100 per directory,
// random capabilities, every tenth a symlink).
func largeIndexBytes(tb testing.TB, n int) []byte {
	r := rand.New(rand.NewPCG(1, 1))
	items := make([]item, n)
	for i := range items {
		var ref eris.Ref
		var key eris.Key
		for j := range ref {
			ref[j], key[j] = byte(r.Uint32()), byte(r.Uint32())
		}
		bs := eris.BlockSize1K
		if i%7 == 0 {
			bs = eris.BlockSize32K
		}
		rc, err := eris.NewReadCapability(bs, r.IntN(3), ref, key)
		if err != nil {
			tb.Fatal(err)
		}
		items[i] = item{path: []string{"share", fmt.Sprintf("dir-%04d", i/100), fmt.Sprintf("file-%d.scm", i)}, kind: Regular, cap: rc}
		if i%10 == 0 {
			items[i].kind, items[i].cap, items[i].target = Symlink, eris.ReadCapability{}, "../../lib/target-file"
		}
	}
	c, err := newCodec(Limits{}, true)
	if err != nil {
		tb.Fatal(err)
	}
	idx, err := c.marshal(items)
	if err != nil {
		tb.Fatal(err)
	}
	return idx
}

// largeIndex stores the index of largeIndexBytes and returns its
// capability and size.
func largeIndex(b *testing.B, n int) (eris.ReadCapability, *eristest.Store, int) {
	idx := largeIndexBytes(b, n)
	store := eristest.NewStore()
	rc, err := eris.Encode(b.Context(), bytes.NewReader(idx), store, eris.EncodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return rc, store, len(idx)
}

// BenchmarkOpenLargeIndex opens a tree of 100 000 entries: fetch, verify
// and decrypt the index, decode, validate, check the encoding. Judge it
// against BenchmarkOpenLargeIndexReadLimit.
func BenchmarkOpenLargeIndex(b *testing.B) {
	rc, store, size := largeIndex(b, 100_000)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(b.Context(), rc, store, OpenOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenLargeIndexReadLimit only fetches, verifies and decrypts the
// same index: the part of Open that is not this package's.
func BenchmarkOpenLargeIndexReadLimit(b *testing.B) {
	rc, store, size := largeIndex(b, 100_000)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := readIndex(b.Context(), rc, store, eris.ReaderOptions{Nodes: eris.NewNodeCache(8 << 20)}, DefaultMaxIndexSize, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// goRootIndex is the index of the whole GOROOT, the tree of the
// toolchain item of the real-software suite (tests/bench): some 15 000
// entries, 1.5 MB.
func goRootIndex(b *testing.B) []byte {
	dir := runtime.GOROOT()
	if _, err := os.Stat(filepath.Join(dir, "src")); err != nil {
		b.Skipf("GOROOT absent: %v", err)
	}
	store := eristest.NewStore()
	rc, _, err := EncodeDir(b.Context(), dir, store, EncodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	r, err := eris.NewReader(b.Context(), rc, store)
	if err != nil {
		b.Fatal(err)
	}
	size, err := r.Size()
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, size)
	if _, err := r.ReadAt(data, 0); err != nil {
		b.Fatal(err)
	}
	return data
}

// BenchmarkParseGOROOT decodes, validates and builds the tree of a real
// index: what Open does once the index's blocks are here.
func BenchmarkParseGOROOT(b *testing.B) {
	data := goRootIndex(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var entries int
	for b.Loop() {
		t, err := parse(data, nil, OpenOptions{})
		if err != nil {
			b.Fatal(err)
		}
		entries = t.Len()
	}
	b.ReportMetric(float64(entries), "entries")
}
