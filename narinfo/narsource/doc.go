// Package narsource produces the nar of a store item from the cheapest
// source that works, checked against the narinfo's signed NarHash and
// NarSize as it streams.
//
// The sources (Kind):
//
//   - Tree: the item's ERIS-FS tree (the narinfo's ERIS field), serialized
//     by package erisfs/erisnar from blocks held locally and fetched from
//     peers, every block verified.
//   - ERISNar: the whole compressed nar carried as ERIS content (the
//     `ERIS-Nar: urn:eris:… <compression>` field): its blocks from the
//     cache and peers, read ahead, decompressed by package narinfo/compress.
//   - Upstream: the nar at one of the narinfo's URLs (Locations, made
//     absolute by package narinfo/source), decompressed as it streams —
//     Compression none, gzip, bzip2, xz, zstd, lzip.
//
// Choose orders them by the bytes each would move over the network: the
// tree's blocks not held locally (counted from the local index, or
// estimated from NarSize when its index is not local), the compressed
// nar's blocks not held, a location's FileSize. Sources that failed for
// the item a moment ago go last, so that a client's retry takes another.
//
// Chooser.Write tries them in that order. A source that fails before the
// first byte was passed on is followed by the next; once bytes went out a
// failure ends the nar short (the caller must abort the response): the
// last bytes of a nar are held back until the whole nar matched (see
// erisnar.Checked), so a client never receives a complete wrong nar. When
// nothing can start the error is a *NoSourceError naming each attempt.
//
//	c := narsource.New(narsource.Options{Blocks: tiered, Local: disk, Has: disk.Has})
//	res, err := c.Write(ctx, w, n, narsource.Extra{})
//	log.Info("nar", "source", res.Kind, "moved", res.Moved)
package narsource
