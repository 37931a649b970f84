// Package nar reads and writes Nix ARchives (nars), the canonical
// serialization of a store item that Guix and Nix hash and sign
// (specs/guix-substitutes.md §2).
//
// A nar holds one node — a regular file, an executable, a symlink or a
// directory of named nodes — and nothing else: no owners, times or
// permissions beyond the executable bit. The package provides
//
//   - [Reader], a streaming reader shaped like archive/tar that rejects every
//     malformed or non-canonical archive (bad order, duplicates, `..`, `/` or
//     NUL in names, absurd lengths, non-zero padding, trailing data) with a
//     [FormatError] naming the byte offset;
//   - [Writer], its mirror, and [WriteFS] / [Walk], which serialize any
//     [io/fs.FS] (symlinks through [io/fs.ReadLinkFS]) in one streaming pass;
//     [DirFS] is an os-backed file system that never follows symlinks;
//   - [Hash] (SHA-256, printed in Nix's base-32 alphabet as `sha256:…`) and
//     [HashingWriter], which gives the NarHash and NarSize of what passes
//     through it.
//
// It does not know about narinfos, signatures, ERIS or stores: see package
// narinfo.
//
//	hw := nar.NewHashingWriter(os.Stdout)
//	err := nar.WriteFS(ctx, hw, nar.DirFS("/gnu/store/…-hello-2.12"))
//	fmt.Println(hw.Sum().Hash, hw.Sum().Size) // sha256:1sag…  220704
package nar
