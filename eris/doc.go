// Package eris implements ERIS v1.0.0, the Encoding for Robust Immutable Storage
// (eris.codeberg.page/spec; our notes in specs/eris.md).
//
// Content is split into uniform 1 KiB or 32 KiB blocks, each encrypted with
// ChaCha20 under a key derived from its plaintext and addressed by the
// Blake2b-256 hash of its ciphertext (a [Ref]). The blocks form a Merkle tree
// whose root, together with the block size and tree level, is the
// [ReadCapability] — written as a `urn:eris:` URN.
//
// The package provides the identifiers, a streaming parallel [Encode] that
// writes blocks through a [BlockPutter], and a random-access verifying
// [Reader] that fetches blocks through a [BlockGetter]. It does not store or
// transport blocks: see packages cache and fetcher.
//
//	rc, err := eris.Encode(ctx, file, store, eris.EncodeOptions{})
//	r, err := eris.NewReader(ctx, rc, store)
//	n, err := r.ReadAt(buf, 1<<20)
package eris
