package compress

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// lzip member layout (lzip manual, "File format"): a 6-byte header ("LZIP",
// version 1, coded dictionary size), an LZMA stream with lc=3 lp=0 pb=2
// ended by an end-of-stream marker, and a 20-byte trailer: CRC-32 and size
// of the data, size of the whole member. Members may be concatenated.
const (
	lzipHeaderLen  = 6
	lzipTrailerLen = 20
	lzipMinDict    = 4 << 10
	lzipMaxDict    = 512 << 20
)

var lzipMagic = [4]byte{'L', 'Z', 'I', 'P'}

// ErrLzip reports a damaged lzip stream.
var ErrLzip = errors.New("lzip: corrupt stream")

type lzipReader struct {
	src    *bufio.Reader
	in     countingByteReader
	lz     *lzma.Reader
	crc    hash.Hash32
	size   uint64 // decompressed bytes of the current member
	member int    // members started
	err    error
}

func newLzipReader(r io.Reader) (io.ReadCloser, error) {
	z := &lzipReader{src: buffered(r), crc: crc32.NewIEEE()}
	if err := z.startMember(true); err != nil {
		return nil, err
	}
	return z, nil
}

// startMember reads a member header; at a later member, a clean end of the
// input ends the stream (io.EOF).
func (z *lzipReader) startMember(first bool) error {
	var h [lzipHeaderLen]byte
	n, err := io.ReadFull(z.src, h[:])
	if !first && n == 0 && err == io.EOF {
		return io.EOF
	}
	if err != nil {
		return fmt.Errorf("%w: member %d header: %v", ErrLzip, z.member+1, noEOF(err))
	}
	if [4]byte(h[:4]) != lzipMagic {
		if first {
			return fmt.Errorf("%w: not an lzip stream (magic %q)", ErrLzip, h[:4])
		}
		return fmt.Errorf("%w: trailing data after member %d", ErrLzip, z.member)
	}
	if h[4] != 1 {
		return fmt.Errorf("%w: member %d: version %d (only 1 is defined)", ErrLzip, z.member+1, h[4])
	}
	base := uint32(1) << (h[5] & 0x1f)
	dict := base - base/16*uint32(h[5]>>5)
	if dict < lzipMinDict || dict > lzipMaxDict || (h[5]&0x1f) > 29 {
		return fmt.Errorf("%w: member %d: dictionary size code %#x", ErrLzip, z.member+1, h[5])
	}
	if dict > MaxWindow {
		return fmt.Errorf("%w: member %d: dictionary of %d bytes is over the %d this reader allows", ErrLzip, z.member+1, dict, MaxWindow)
	}
	// The classic LZMA header the library reads: properties, dictionary
	// size, unknown uncompressed size (the stream ends at its marker).
	var lh [lzma.HeaderLen]byte
	lh[0] = lzma.Properties{LC: 3, LP: 0, PB: 2}.Code()
	binary.LittleEndian.PutUint32(lh[1:5], dict)
	binary.LittleEndian.PutUint64(lh[5:], ^uint64(0))
	z.in = countingByteReader{pre: lh[:], src: z.src}
	lz, err := lzma.ReaderConfig{DictCap: int(dict)}.NewReader(&z.in)
	if err != nil {
		return fmt.Errorf("%w: member %d: %v", ErrLzip, z.member+1, err)
	}
	z.lz, z.size = lz, 0
	z.crc.Reset()
	z.member++
	return nil
}

func (z *lzipReader) Read(p []byte) (int, error) {
	for z.err == nil {
		n, err := z.lz.Read(p)
		if n > 0 {
			z.crc.Write(p[:n])
			z.size += uint64(n)
		}
		switch {
		case err == io.EOF:
			if z.err = z.endMember(); z.err == nil {
				z.err = z.startMember(false)
			}
		case err != nil:
			z.err = fmt.Errorf("%w: member %d: %v", ErrLzip, z.member, err)
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, z.err
}

// endMember checks the trailer against what was decompressed and read.
func (z *lzipReader) endMember() error {
	if !z.lz.EOSMarker() {
		return fmt.Errorf("%w: member %d: LZMA stream without end marker", ErrLzip, z.member)
	}
	var t [lzipTrailerLen]byte
	if _, err := io.ReadFull(z.src, t[:]); err != nil {
		return fmt.Errorf("%w: member %d trailer: %v", ErrLzip, z.member, noEOF(err))
	}
	crc := binary.LittleEndian.Uint32(t[0:4])
	size := binary.LittleEndian.Uint64(t[4:12])
	memberSize := binary.LittleEndian.Uint64(t[12:20])
	switch {
	case crc != z.crc.Sum32():
		return fmt.Errorf("%w: member %d: CRC-32 %08x, data has %08x", ErrLzip, z.member, crc, z.crc.Sum32())
	case size != z.size:
		return fmt.Errorf("%w: member %d: trailer says %d bytes of data, got %d", ErrLzip, z.member, size, z.size)
	case memberSize != uint64(lzipHeaderLen+z.in.n+lzipTrailerLen):
		return fmt.Errorf("%w: member %d: trailer says a member of %d bytes, read %d", ErrLzip, z.member, memberSize, lzipHeaderLen+z.in.n+lzipTrailerLen)
	}
	return nil
}

func (z *lzipReader) Close() error { return nil }

// countingByteReader serves a synthetic prefix, then the source, counting
// the source bytes the LZMA decoder consumed. It is an io.ByteReader, so
// the decoder reads no further than its stream's end.
type countingByteReader struct {
	pre []byte
	src *bufio.Reader
	n   int64
}

func (c *countingByteReader) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	n, err := c.src.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingByteReader) ReadByte() (byte, error) {
	if len(c.pre) > 0 {
		b := c.pre[0]
		c.pre = c.pre[1:]
		return b, nil
	}
	b, err := c.src.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
