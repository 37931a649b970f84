package source

import (
	"context"
	"path/filepath"
	"testing"

	"erismount/narinfo"
)

// BenchmarkCacheHit is a narinfo from the SQLite cache (read, parse, the
// signature checked again); BenchmarkDir beside it is the same narinfo
// read from a directory, the baseline.
func BenchmarkCacheHit(b *testing.B) {
	s := newSigner(b)
	dir := b.TempDir()
	writeNarinfo(b, dir, hashPart(1), s.narinfoOf(b, "/gnu/store", 1, narinfo.Classic, "nar/1"))
	d, err := NewDir(dir, Options{Trust: Trust{ACL: narinfo.NewACL(s.key.Public())}})
	if err != nil {
		b.Fatal(err)
	}
	c, err := OpenCache(filepath.Join(b.TempDir(), "n.sqlite"), d, CacheOptions{Trust: Trust{ACL: narinfo.NewACL(s.key.Public())}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Narinfo(ctx, hashPart(1)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Narinfo(ctx, hashPart(1)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDir(b *testing.B) {
	s := newSigner(b)
	dir := b.TempDir()
	writeNarinfo(b, dir, hashPart(1), s.narinfoOf(b, "/gnu/store", 1, narinfo.Classic, "nar/1"))
	d, err := NewDir(dir, Options{Trust: Trust{ACL: narinfo.NewACL(s.key.Public())}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Narinfo(ctx, hashPart(1)); err != nil {
			b.Fatal(err)
		}
	}
}
