// Package source finds the narinfo of a store item by the hash part of its
// store path, verified: the one seam through which the substitute server,
// copy-in and the store view learn what a store item is.
//
// A Lookup returns only narinfos whose signature is trusted (Trust: a Guix
// signature by a key of the ACL, or a Nix Sig by a trusted key), for the
// store item asked (its StorePath starts with the hash part, in the
// expected store directory); what it cannot vouch for is an error:
//
//   - ErrUnknown: no source has a narinfo for the item. Safe to remember
//     for a while (a negative cache entry).
//   - ErrUntrusted (an *UntrustedError with the reason): a narinfo was
//     found but it is malformed, unsigned, signed by an unknown key, its
//     signature is corrupt or does not match, or it names another item or
//     store. It is never served.
//   - anything else: a transport failure (upstream down, timeout); try
//     again later, do not remember.
//
// The Locations of a narinfo from a Lookup are absolute URLs (http, https,
// or file for a Dir), resolved against where the narinfo came from as
// `guix substitute` and Nix do, so that a nar can be fetched from them
// without knowing the origin. Locations are never signed: a nar fetched
// from one must be checked against the signed NarHash and NarSize.
//
// Implementations: Dir (a directory of <hash>.narinfo files, as `erismount
// publish --narinfo-dir` and `nix copy --to file://` write them), HTTP (an
// upstream substitute server: /nix-cache-info, /<hash>.narinfo), Chain
// (several tried in order, as --substitute-urls), and Cache (SQLite,
// positive and negative TTLs, in front of any other).
//
//	up, err := source.NewHTTP("https://ci.guix.gnu.org", source.HTTPOptions{Trust: trust})
//	look, err := source.OpenCache(path, source.Chain{up}, source.CacheOptions{Trust: trust})
//	n, err := look.Narinfo(ctx, "dvd2b7ypm1kzrn4hcd5ygx5fnyd9mhl6")
package source
