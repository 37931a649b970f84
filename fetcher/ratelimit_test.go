package fetcher

import (
	"context"
	"testing"
	"time"

	"erismount/eris"
)

// TestUploadLimiterReserve: a burst goes at once, then bytes wait for the
// rate, in order; a pause refills the bucket but never beyond the burst.
func TestUploadLimiterReserve(t *testing.T) {
	const rate = 1 << 20 // 1 MiB/s: 1 KiB is 1/1024 s
	l := newUploadLimiter(rate)
	kib := time.Second / 1024
	t0 := time.Unix(1000, 0)
	steps := []struct {
		name string
		at   time.Duration
		n    int
		want time.Duration
	}{
		{"first burst byte", 0, 1024, 0},
		{"rest of the burst", 0, uploadBurst - 1024, 0},
		{"past the burst", 0, 1024, kib},
		{"next in line", 0, 1024, 2 * kib},
		{"after a pause that pays it back", 10 * time.Second, 32 << 10, 0},
		{"the burst is not more after a long pause", 20 * time.Second, uploadBurst, 0},
		{"and then waits again", 20 * time.Second, 2048, 2 * kib},
	}
	for _, s := range steps {
		if got := l.reserve(t0.Add(s.at), s.n); got.Round(time.Microsecond) != s.want.Round(time.Microsecond) {
			t.Errorf("%s: wait %v, want %v", s.name, got, s.want)
		}
	}
	if newUploadLimiter(0) != nil || newUploadLimiter(-1) != nil {
		t.Error("a limiter without a rate")
	}
	var none *uploadLimiter
	if err := none.wait(context.Background(), 1<<30); err != nil {
		t.Errorf("no limiter: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l.reserve(t0.Add(time.Hour), uploadBurst) // the bucket is empty now
	if err := l.wait(ctx, 1<<30); err == nil {
		t.Error("a wait of a cancelled context returned no error")
	}
}

// TestServerUploadCap: a capped server serves every block over each
// transport, and counts what it sent.
func TestServerUploadCap(t *testing.T) {
	noLeaks(t)
	blocks := append(randomBlocks(t, 4, eris.BlockSize1K), randomBlocks(t, 4, eris.BlockSize32K)...)
	store, refs := storeWith(t, blocks...)
	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			srv, urls := serve(t, store, ServerOptions{MaxUploadRate: 4 << 20}, tr.listen)
			fetchAll(t, context.Background(), dial(t, urls[0], ClientOptions{}), refs, blocks, 4)
			srv.Close() // the handlers count what they sent after the client has it
			want := uint64(4*eris.BlockSize1K + 4*eris.BlockSize32K)
			if got := srv.Stats().Sent; got < want {
				t.Errorf("sent %d bytes, want at least %d", got, want)
			}
		})
	}
}
