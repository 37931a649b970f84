// Package erisnar serializes ERIS-FS trees as nars — the bytes Guix and Nix
// hash against a narinfo's signed NarHash (specs/guix-substitutes.md §2) —
// fetching file contents ahead of the writer, and checks what it writes
// against a narinfo without ever letting a whole wrong nar through.
//
// Write walks an erisfs.Tree in nar order and writes its nar. A nar puts each
// file's size before its bytes and the ERIS-FS index holds no sizes, so a
// plain walk over the io/fs view (nar.WriteFS of Tree.FS) waits for one
// round trip per file; Write instead reads the next files (their sizes and,
// for small ones, their whole contents) concurrently while the current one
// is written, and streams large files with the eris reader's own read-ahead.
// When the tree's getter is a cache in front of peers (cache.Tiered), Write
// plans the whole tree first: which leaves the cache lacks, fetched ahead
// many at once while the held ones stream, and held leaves read from the
// cache in bulk. An upgrade — a tree whose older version is cached — then
// costs one pass over the cache and the new blocks at the link's speed.
//
// WriteChecked is Write held to a narinfo: it hashes the nar as it goes,
// fails as soon as it grows past NarSize, and keeps the last bytes of the
// nar (the closing token of its root, without which no nar parser accepts
// the stream) until the whole nar is known to match NarHash and NarSize.
// A caller streaming to a client (the substitute server) aborts the response
// on error, so a client never receives a complete nar that does not match.
//
// It does not fetch or cache blocks (the tree's block getter does) nor parse
// narinfos (package narinfo).
//
//	tree, err := erisfs.Open(ctx, n.ERIS, blocks, erisfs.OpenOptions{})
//	err = erisnar.WriteChecked(ctx, w, tree, n, erisnar.Options{})
//	// err matching narinfo.ErrMismatch: abort, do not finish the response
package erisnar
