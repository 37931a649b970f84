// Package s3 keeps ERIS blocks in an S3-compatible object store (Amazon
// S3, MinIO, Ceph RGW, Garage, SeaweedFS, versitygw): one object per
// block, named PREFIX/REF with REF the 52-character base32 reference — the
// static HTTP block layout, so a bucket made public also serves plain
// http(s) peers with no erismount process in front.
//
// A Store is an eris.BlockStore and has the methods of a fetcher.Peer: it
// verifies every block on the way in (size and Blake2b-256 before an
// upload) and on the way out (a tampered, truncated or foreign object is
// eris.ErrCorrupt, never data), and counts the requests it sends (Stats),
// since with small blocks requests are what an object store bills. A put is
// idempotent: a HEAD first (or If-None-Match: *) keeps a block the bucket
// holds from being sent again. An Uploader writes through a Store with many
// uploads in flight, for publishing.
//
// It does not cache (put cache.Tiered in front), list, or delete: blocks
// are immutable, and what to keep is the bucket owner's policy.
//
//	st, err := s3.Open("s3://blocks/eris?endpoint=http://127.0.0.1:9000", s3.Options{})
//	err = st.Check(ctx)             // the bucket is there and the keys are good
//	b, err := st.GetBlock(ctx, ref) // verified
//
// The client is minio-go/v7: one module built for S3-compatible services
// other than Amazon's (path-style detection, no per-bucket region lookup
// once a region is set), with the AWS credential variables and shared
// files, and a small API for single-object GET/HEAD/PUT.
package s3
