// Package subst is a substitute server for unmodified Guix and Nix clients:
// a `guix publish`-compatible HTTP endpoint (specs/guix-substitutes.md §5)
// whose nars are produced on the fly from ERIS-FS trees, their blocks fetched
// lazily — and verified — through a cache and peers as the client reads
// (the substitute path of §4.4, option 1).
//
// NewServer serves the narinfos a source.Lookup finds — a narinfo
// directory, upstream substitute servers tried in order, the SQLite narinfo
// cache in front of them (package narinfo/source), each verified there —
// and makes every nar from the cheapest source that works (package
// narinfo/narsource): the item's ERIS-FS tree, its compressed nar as ERIS
// content, or the upstream's nar at its URL, decompressed and checked. A
// narinfo without `ERIS:` makes the server a verifying, caching proxy of the
// upstream's nars. New is the original server: narinfos from a Source of
// signed narinfos carrying `ERIS:` (Dir: a directory of `<hash
// part>.narinfo` files, as `erismount publish --narinfo-dir` writes them),
// checked against Options.Trust, nars from their ERIS-FS trees only.
// An upstream narinfo is served only if its signature is trusted and some
// source could produce its nar. What is served keeps its identity — StorePath, NarHash, NarSize,
// ERIS, References, Deriver, System — and says where the nar is:
// `URL: nar/<basename>`, `Compression: none`, `FileSize: <NarSize>`, in the
// order `guix publish` writes (narinfo.Classic). It is then either
//
//   - re-signed with the server's own key: a Guix Signature (Options.Key;
//     the admin authorizes the key once with `guix archive --authorize`) and/or
//     a Nix Sig (Options.NixKey; listed in the client's trusted-public-keys);
//     or
//   - left unsigned (no key): Guix then accepts it through its equivalence
//     rule (§1.7) when this server comes before an authorized upstream in
//     --substitute-urls and that upstream vouches for the same StorePath,
//     NarHash, NarSize and References; Nix accepts it only with
//     require-sigs off.
//
// Nars are served only uncompressed at /nar/<basename>, as
// `application/x-nix-archive` with a Content-Length of NarSize, checked
// against the narinfo's signed NarHash and NarSize as they stream. The
// response starts once 64 KiB of nar are ready (or the whole nar, if
// smaller): when no source can produce them the answer is 502 (504 when
// every source timed out) with a one-line reason — Guix prints a clean
// "download failed" for a status. If a block cannot be had, or the bytes
// would not match, after the response started, it is aborted — the
// connection closes before the end of the nar — so a client never
// receives a complete nar that does not match.
//
// Nix clients are served with Options.StoreDir "/nix/store": /nix-cache-info
// carries StoreDir, WantMassQuery and Priority, and HEAD requests (which Nix
// sends to ask whether a narinfo exists) are answered like GET without a
// body. Other methods get 404, as from guix publish.
//
// It does not publish (package narinfo/publish), fetch blocks (the
// eris.BlockGetter it is given: cache.Tiered over a fetcher.Pool), nor
// compress.
//
//	srv, err := subst.New(subst.Dir("/srv/narinfo"), blocks, subst.Options{
//		Key: key, Trust: subst.Trust{ACL: acl}})
//	err = srv.Serve(ctx, ln) // http://127.0.0.1:8080
package subst
