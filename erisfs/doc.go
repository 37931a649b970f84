// Package erisfs encodes and decodes ERIS-FS trees (eris.codeberg.page,
// "ERIS-FS: A format for encoding file systems"; our notes in
// specs/eris-fs.md): directories of regular files, executable files and
// symlinks, whose file contents are ERIS content and whose structure is one
// CBOR index, itself ERIS content. The index's read capability — a
// `urn:eris:` URN — names the whole tree.
//
// Encoding (EncodeDir, EncodeFS, EncodeNar) writes the blocks of every file
// and of the index through an eris.BlockPutter. The same tree gives the same
// URN whatever the walk order, timestamps or owners: the index is
// deterministic CBOR (RFC 8949 §4.2.1) and holds only paths, kinds and
// contents. Identical files share one capability and so one set of blocks;
// hard links are just files with the same content. What ERIS-FS cannot hold
// — empty directories below the root, devices, sockets, FIFOs, names or
// symlink targets that are not UTF-8 — is refused with an error naming its
// path unless EncodeOptions.DropUnrepresentable drops it with a warning.
//
// Decoding (Open) fetches the index through an eris.BlockGetter, verifies
// and validates it — hostile indexes are refused with an error naming the
// offending path — and returns an immutable Tree: directory listings sorted
// by name, lookups, kinds, each file's capability, symlink targets, stable
// entry numbers for inodes, and file sizes fetched lazily from the contents
// (the index has none). Tree.FS is an io/fs view of the tree.
//
// Decisions where the ERIS-FS text leaves room (see also README):
//   - Contents and index use the ERIS block-size recommendation and the null
//     convergence secret by default (EncodeOptions to change them).
//   - The decoder requires the deterministic encoding byte for byte
//     (OpenOptions.AllowNonDeterministic relaxes it).
//   - The empty path names the root of a single-file tree (a store item that
//     is one file or symlink); it cannot stand beside other entries. An index
//     with no entries is an empty root directory.
//   - A file is executable when its owner may execute it, as Nix and Guix
//     serialize nars.
//   - Entry numbers (Ino) are positions in a walk in sorted order, root 1:
//     stable for a tree, not across trees.
//
// It does not store, fetch or mount: see packages cache, fetcher, fusefs.
//
//	rc, stats, err := erisfs.EncodeDir(ctx, "/gnu/store/…-hello-2.12", store, erisfs.EncodeOptions{})
//	tree, err := erisfs.Open(ctx, rc, store, erisfs.OpenOptions{})
//	data, err := fs.ReadFile(tree.FS(ctx), "bin/hello")
package erisfs
