// Package narinfo reads, writes, signs and verifies narinfos — the signed
// description of a store item that Guix and Nix substitute servers publish
// (specs/guix-substitutes.md §1) — including the `ERIS:` field that names
// the item's ERIS-FS encoding, and copies a verified tree into a store.
//
// What it holds:
//   - [Parse] keeps the exact bytes (signatures are checked against them,
//     never against a re-serialization) and enforces the ERIS field rules:
//     one `urn:eris:` value, `urn:erisx2:` kept as unsupported, identity
//     fields (StorePath, NarHash, NarSize, ERIS, ERIS-Nar, References,
//     Deriver) only above the Signature line, location groups on either
//     side. `ERIS-Nar: urn:eris:… zstd` ([ERISNar], [Narinfo.NarCapability])
//     names the item's compressed nar as plain ERIS content, so a whole
//     item can travel between untrusted peers at its compressed size;
//     clients that do not know it skip it, as Guix and Nix skip every
//     unknown field, and its bytes are signed like the rest.
//     [Narinfo.Marshal] and [Narinfo.Sign] write the classic `guix publish`
//     order or the v4 ERIS order ([Classic], [ERISv4]).
//   - Guix signatures: ECDSA on the Ed25519 curve with libgcrypt's
//     deterministic RFC 6979 nonces ([PrivateKey], [PublicKey],
//     [GenerateKey], key files byte-identical to Guix's), the ACL ([ACL]),
//     and [Narinfo.Verify], which reports the outcome Guix would
//     ([Outcome]: unsigned, corrupt signature, unauthorized key, hash
//     mismatch, invalid signature, valid).
//   - Nix signatures: `Sig: name:base64`, Ed25519 over Nix's fingerprint,
//     and Nix key files ([NixPrivateKey], [NixPublicKey]).
//   - [CopyIn], which materializes any fs.FS in a store directory with
//     canonical metadata, checks its nar hash and size against the signed
//     ones, and only then renames it into place.
//
// Nar serialization is in package narinfo/nar, s-expressions in
// narinfo/sexp.
//
//	n, err := narinfo.Parse(raw)
//	outcome, err := n.Verify(acl) // narinfo.Valid, or why not
//	rc, err := n.Capability()     // the urn:eris: capability
//	en, err := n.NarCapability()  // ERIS-Nar: the compressed nar's capability
package narinfo
