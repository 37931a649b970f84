// Package compress turns the compressed nars of a substitute server into
// nar streams and back, by the narinfo's `Compression:` value: none, gzip,
// bzip2 (read only), xz, zstd and lzip.
//
// It adds no compression code of its own but the lzip container: zstd and
// gzip come from klauspost/compress, xz and the LZMA inside lzip from
// ulikunitz/xz, bzip2 from the standard library. The lzip member format
// (header, LZMA stream with end marker, CRC-32/size trailer; lzip manual
// §"File format") is read here because the lzip library available
// (sorairolake/lzip-go) buffers a whole member in memory, which a nar of
// hundreds of megabytes must not need.
//
// A reader checks what its format can check (CRC-32 for gzip, lzip and xz
// blocks, zstd's content checksum when present); it does not replace the
// NarHash check the caller does on the decompressed nar.
//
//	rc, err := compress.NewReader(resp.Body, ni.Compression)
//	if err != nil { … }           // unknown method, bad header
//	defer rc.Close()
//	nar.Copy(dst, rc)             // then check NarHash and NarSize
package compress
