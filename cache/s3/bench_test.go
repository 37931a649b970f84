package s3_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"erismount/cache"
	"erismount/cache/cachetest"
	"erismount/cache/s3"
	"erismount/eris"
	"erismount/tests/testenv"
)

// The S3 store's hot paths beside the baseline they replace, the SQLite
// store: one run gives the ratio. The S3 figures are a loopback round trip
// to versitygw over its page cache, so they are a floor; a real service
// adds its network latency per request, which the uploader's and the
// pool's many requests in flight hide.

func benchBlocks(n, size int) ([]eris.Ref, [][]byte) {
	refs := make([]eris.Ref, n)
	blocks := make([][]byte, n)
	for i := range refs {
		refs[i], blocks[i] = cachetest.Block(uint64(1<<20+i), size)
	}
	return refs, blocks
}

func BenchmarkGetBlock(b *testing.B) {
	srv := testenv.StartS3(b)
	for _, size := range []int{eris.BlockSize1K, eris.BlockSize32K} {
		refs, blocks := benchBlocks(256, size)
		stores := map[string]eris.BlockStore{}
		sq, err := cache.OpenSQLite(filepath.Join(b.TempDir(), "b.sqlite"), cache.SQLiteOptions{SoftQuota: cache.Unlimited})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sq.Close() })
		stores["SQLite"] = sq
		stores["S3"] = open(b, srv, "")
		for _, st := range stores {
			for i := range refs {
				if err := st.PutBlock(context.Background(), refs[i], blocks[i]); err != nil {
					b.Fatal(err)
				}
			}
		}
		sq.Flush(context.Background())
		for _, name := range []string{"SQLite", "S3"} {
			b.Run(fmt.Sprintf("%s/%d", name, size), func(b *testing.B) {
				st := stores[name]
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						if _, err := st.GetBlock(context.Background(), refs[i%len(refs)]); err != nil {
							b.Error(err)
							return
						}
						i++
					}
				})
			})
		}
	}
}

// BenchmarkPutBlock writes new blocks: into SQLite, into S3 one request
// after another (HEAD then PUT, or a conditional PUT), and through the
// uploader with 64 in flight. It reports requests per block.
func BenchmarkPutBlock(b *testing.B) {
	srv := testenv.StartS3(b)
	const size = eris.BlockSize1K
	type putter interface {
		PutBlock(context.Context, eris.Ref, []byte) error
	}
	run := func(b *testing.B, p putter, flush func() error, requests func() int64) {
		refs, blocks := benchBlocks(b.N, size)
		b.SetBytes(size)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range refs {
			if err := p.PutBlock(context.Background(), refs[i], blocks[i]); err != nil {
				b.Fatal(err)
			}
		}
		if err := flush(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if requests != nil {
			b.ReportMetric(float64(requests())/float64(b.N), "requests/block")
		}
	}
	b.Run("SQLite", func(b *testing.B) {
		sq, err := cache.OpenSQLite(filepath.Join(b.TempDir(), "b.sqlite"), cache.SQLiteOptions{SoftQuota: cache.Unlimited})
		if err != nil {
			b.Fatal(err)
		}
		defer sq.Close()
		run(b, sq, func() error { return sq.Flush(context.Background()) }, nil)
	})
	for _, query := range []string{"", "put=conditional"} {
		name := "S3/head"
		if query != "" {
			name = "S3/conditional"
		}
		b.Run(name, func(b *testing.B) {
			st := open(b, srv, query)
			run(b, st, func() error { return nil }, func() int64 { return st.Stats().Requests() })
		})
	}
	b.Run("S3/uploader64", func(b *testing.B) {
		st := open(b, srv, "")
		u := st.NewUploader(64)
		defer u.Close()
		run(b, u, func() error { return u.Flush(context.Background()) }, func() int64 { return st.Stats().Requests() })
	})
	// Over a network a request costs a round trip: 5 ms more here, as to
	// a service in the same region. One put after another pays it twice
	// per block; the uploader's 64 in flight hide it.
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("S3+5ms/uploader%d", n), func(b *testing.B) {
			st := openWith(b, srv, s3.Options{Transport: delayed{5 * time.Millisecond, http.DefaultTransport}})
			u := st.NewUploader(n)
			defer u.Close()
			run(b, u, func() error { return u.Flush(context.Background()) }, func() int64 { return st.Stats().Requests() })
		})
	}
}

// delayed adds a fixed latency to every request.
type delayed struct {
	d    time.Duration
	base http.RoundTripper
}

func (d delayed) RoundTrip(r *http.Request) (*http.Response, error) {
	time.Sleep(d.d)
	return d.base.RoundTrip(r)
}
