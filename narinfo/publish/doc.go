// Package publish publishes store items for ERIS substitution: it encodes
// each item's tree with ERIS-FS into a block store (a local SQLite store, or a
// peer that accepts PUT) and makes the item's narinfo, carrying the tree's
// `ERIS: urn:eris:…` capability above the signature, signed with a Guix key
// (Signature:, ECDSA on Ed25519) and/or a Nix key (Sig: over Nix's
// fingerprint) — specs/guix-substitutes.md §1.3, §1.9.
//
// An item is read from its directory (or file, or symlink) on disk, or from
// its nar. Its nar is serialized and hashed once, and the same stream is
// encoded (erisfs.EncodeNar), so NarHash and NarSize are those of exactly
// the bytes encoded. Before a capability is advertised, the tree is opened
// again from the block store and serialized back (package narinfo/erisnar):
// only if that nar has the item's NarHash and NarSize does the narinfo get an
// ERIS field.
// Items ERIS-FS cannot represent — an empty directory below the root, a name
// that is not UTF-8 — or whose tree does not serialize back still get a
// signed narinfo, without ERIS; Result.NoERIS says why.
//
// Narinfos are written in the v4 ERIS layout (narinfo.ERISv4): StorePath,
// NarHash, NarSize, ERIS, References, Deriver, System, Signature, then the
// location `URL: nar/<basename>`, `Compression: none`, `FileSize: <NarSize>`
// (an unauthenticated hint; package subst serves exactly that), then Nix Sig
// fields. WriteNarinfo stores one as `<hash part>.narinfo`, the layout
// package subst serves from.
//
// Static caches: with Options.NarDir the nar is also written compressed
// (package compress; zstd by default, several methods at once if asked) in
// `guix publish`'s layout, <NarDir>/<compression>/<base name>, chosen over
// Nix's nar/<file hash>.nar.<ext> because its name is known before the
// nar is compressed (one streaming pass, no rename by hash), it is what
// Guix mirrors and `guix publish --cache` already hold, and Nix follows
// any relative URL. The locations then name those files, with FileSize
// and FileHash. WriteCacheInfo adds nix-cache-info, and BlockDir stores
// blocks as <dir>/<REF>, the static layout fetcher's HTTP peers read with
// ?layout=static: narinfos, nars and blocks together are a complete cache
// any web server can serve.
//
// With Options.ERISNar the compressed nar is also encoded as plain ERIS
// content (32 KiB blocks, about 1.004× its size for a 40 MB nar), read
// back and checked against NarHash, and its capability signed into the
// narinfo as `ERIS-Nar: urn:eris:… zstd` (narinfo.ERISNar), so a whole
// item can come from untrusted peers at its compressed size.
//
// It does not find references or derivers (the caller asks the store, e.g.
// `nix-store -q --references`), nor register anything in a store.
//
//	res, err := publish.Items(ctx, []publish.Item{{StorePath: "/nix/store/…-hello-2.12"}},
//		blocks, publish.Options{NixKey: &key})
//	_, err = publish.WriteNarinfo("/srv/narinfo", res[0])
package publish
