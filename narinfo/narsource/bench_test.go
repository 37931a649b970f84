package narsource

import (
	"bytes"
	"context"
	"io"
	"testing"

	"erismount/narinfo"
	"erismount/narinfo/compress"
	"erismount/narinfo/nar"
	"erismount/tests/testenv"
)

// benchNar is a nar of half text, half random bytes (about 8 MiB).
func benchNar(b *testing.B) (*narinfo.Narinfo, []byte) {
	b.Helper()
	spec := testenv.Spec{"random": testenv.Bytes(testenv.Random(1, 4<<20))}
	text := bytes.Repeat([]byte("func (c *Chooser) Write(ctx context.Context, w io.Writer) error\n"), (4<<20)/64)
	spec["text"] = testenv.Bytes(text)
	src := spec.WriteDir(b)
	var buf bytes.Buffer
	hw := nar.NewHashingWriter(&buf)
	if err := nar.WriteFS(context.Background(), hw, nar.DirFS(src)); err != nil {
		b.Fatal(err)
	}
	return &narinfo.Narinfo{StorePath: "/gnu/store/0q7pcz9hnscl1x29v4nws03i2ii5c8v0-bench", NarHash: hw.Sum().Hash, NarSize: hw.Sum().Size}, buf.Bytes()
}

// BenchmarkUpstreamNar is the upstream source's stream: decompress and
// check against NarHash/NarSize; BenchmarkDecompress beside it is the
// decompression alone, the baseline.
func BenchmarkUpstreamNar(b *testing.B) {
	n, raw := benchNar(b)
	for _, m := range []string{compress.Zstd, compress.XZ, compress.None} {
		file := compressed(b, raw, m)
		b.Run(m, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if err := decompressChecked(context.Background(), io.Discard, bytes.NewReader(file), m, n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecompress(b *testing.B) {
	_, raw := benchNar(b)
	for _, m := range []string{compress.Zstd, compress.XZ, compress.None} {
		file := compressed(b, raw, m)
		b.Run(m, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				r, err := compress.NewReader(bytes.NewReader(file), m)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}
