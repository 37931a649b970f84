package compress

import (
	"bufio"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// The Compression: values of a narinfo, as Nix and Guix write them.
const (
	None  = "none"
	Gzip  = "gzip"
	Bzip2 = "bzip2"
	XZ    = "xz"
	Zstd  = "zstd"
	Lzip  = "lzip"
)

// ErrUnknown means a Compression: value this package does not read (or, for
// NewWriter, does not write).
var ErrUnknown = errors.New("unsupported nar compression")

// MaxWindow bounds the memory a hostile stream can make a reader allocate
// for its history: 128 MiB covers zstd up to level 19 without --long (8 MiB),
// xz -9 (64 MiB) and lzip -9 (32 MiB).
const MaxWindow = 128 << 20

// Methods lists the Compression: values NewReader accepts.
func Methods() []string { return []string{None, Gzip, Bzip2, XZ, Zstd, Lzip} }

// normalize maps the empty value (Nix's default for an absent field is
// bzip2, but a narinfo without it from Guix means none; callers pass the
// parsed field) and case to a canonical name.
func normalize(method string) string {
	m := strings.ToLower(strings.TrimSpace(method))
	if m == "" {
		return None
	}
	return m
}

// NewReader returns the decompressed stream of r, compressed with method.
// Closing it releases the decoder; it does not close r.
func NewReader(r io.Reader, method string) (io.ReadCloser, error) {
	switch normalize(method) {
	case None:
		return io.NopCloser(r), nil
	case Gzip:
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return z, nil
	case Bzip2:
		return io.NopCloser(bzip2.NewReader(r)), nil
	case XZ:
		z, err := xz.NewReader(buffered(r))
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(z), nil
	case Zstd:
		z, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(MaxWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return z.IOReadCloser(), nil
	case Lzip:
		return newLzipReader(r)
	}
	return nil, fmt.Errorf("%w: %q (known: %s)", ErrUnknown, method, strings.Join(Methods(), ", "))
}

// NewWriter compresses what is written to it into w with method at level
// (0: the method's default; zstd levels as zstd's command line, 1–19; xz
// and gzip 1–9). Close flushes the stream; it does not close w. lzip and
// bzip2 are read only.
func NewWriter(w io.Writer, method string, level int) (io.WriteCloser, error) {
	switch normalize(method) {
	case None:
		return nopWriteCloser{w}, nil
	case Gzip:
		if level == 0 {
			level = gzip.DefaultCompression
		}
		z, err := gzip.NewWriterLevel(w, level)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return z, nil
	case XZ:
		cfg := xz.WriterConfig{}
		if level > 0 {
			// xz's presets: -0 256 KiB … -6 8 MiB … -9 64 MiB of dictionary.
			cfg.DictCap = xzDict(level)
		}
		z, err := cfg.NewWriter(w)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return z, nil
	case Zstd:
		opts := []zstd.EOption{zstd.WithEncoderCRC(true)}
		if level > 0 {
			opts = append(opts, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)))
		}
		z, err := zstd.NewWriter(w, opts...)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return z, nil
	}
	return nil, fmt.Errorf("%w for writing: %q (written: none, gzip, xz, zstd)", ErrUnknown, method)
}

func xzDict(level int) int {
	dicts := []int{256 << 10, 1 << 20, 2 << 20, 4 << 20, 4 << 20, 8 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20}
	return dicts[min(max(level, 0), 9)]
}

// Ext is the file name extension Nix gives a nar compressed with method
// (`nar/<hash>.nar.xz`), empty for none.
func Ext(method string) string {
	switch normalize(method) {
	case Gzip:
		return ".gz"
	case Bzip2:
		return ".bz2"
	case XZ:
		return ".xz"
	case Zstd:
		return ".zst"
	case Lzip:
		return ".lz"
	}
	return ""
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// Buffered readers, so decoders that read a byte at a time do not each
// make a call into the source.
func buffered(r io.Reader) *bufio.Reader {
	if br, ok := r.(*bufio.Reader); ok {
		return br
	}
	return bufio.NewReaderSize(r, 64<<10)
}
