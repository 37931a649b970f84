package nar_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"erismount/narinfo/nar"
)

var benchTree = flag.String("benchtree", "/usr/local/go/src", "directory tree the nar benchmarks serialize")

func benchDir(b *testing.B) (string, int64) {
	b.Helper()
	if _, err := os.Stat(*benchTree); err != nil {
		b.Skipf("benchmark tree: %v", err)
	}
	hw := nar.NewHashingWriter(nil)
	if err := nar.WriteFS(context.Background(), hw, nar.DirFS(*benchTree)); err != nil {
		b.Fatal(err)
	}
	return *benchTree, hw.Sum().Size
}

// BenchmarkWriteFSHash serializes a large tree from disk and hashes the
// nar (NarHash + NarSize), in one streaming pass. Judge it against
// BenchmarkNixStoreDumpSha256.
func BenchmarkWriteFSHash(b *testing.B) {
	dir, size := benchDir(b)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		hw := nar.NewHashingWriter(nil)
		if err := nar.WriteFS(context.Background(), hw, nar.DirFS(dir)); err != nil {
			b.Fatal(err)
		}
		if hw.Sum().Size != size {
			b.Fatalf("nar size %d, want %d", hw.Sum().Size, size)
		}
	}
}

// BenchmarkNixStoreDumpSha256 is the baseline: `nix-store --dump DIR |
// sha256sum` on the same tree.
func BenchmarkNixStoreDumpSha256(b *testing.B) {
	dir, size := benchDir(b)
	if _, err := exec.LookPath("nix-store"); err != nil {
		b.Skip("nix-store (Debian package nix-bin) is absent")
	}
	if _, err := exec.LookPath("sha256sum"); err != nil {
		b.Skip("sha256sum is absent")
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if out, err := exec.Command("sh", "-c", `nix-store --dump "$1" | sha256sum`, "sh", dir).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// BenchmarkReader reads a nar (of the benchmark tree, from memory) node by
// node, contents included, as `publish --nar` does. Judge it against
// BenchmarkSHA256, one pass of hashing over the same bytes.
func BenchmarkReader(b *testing.B) {
	data := benchNar(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	buf := make([]byte, 64<<10)
	for b.Loop() {
		r := nar.NewReader(bytes.NewReader(data))
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkSHA256 hashes the same nar bytes: the floor of any pass that
// verifies a nar.
func BenchmarkSHA256(b *testing.B) {
	data := benchNar(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		sha256.Sum256(data)
	}
}

func benchNar(b *testing.B) []byte {
	b.Helper()
	dir := filepath.Join(*benchTree, "net")
	if _, err := os.Stat(dir); err != nil {
		b.Skipf("benchmark tree: %v", err)
	}
	var buf bytes.Buffer
	if err := nar.WriteFS(context.Background(), &buf, nar.DirFS(dir)); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}
