package fetcher

import (
	"context"
	"sync"
	"time"
)

// uploadLimiter caps the block bytes a server sends, over all its
// listeners and transports: a token bucket (as a virtual clock, GCRA) of
// rate bytes a second that lets a burst of uploadBurst bytes through at
// once. A seeder on a home link caps its upload so that serving a swarm
// does not fill its uplink; the swarm then takes most blocks from the
// nodes that have them (see Relay).
//
// Only block bytes count (a part of a block-wise transfer, a whole block
// over TCP or HTTP), not headers: CoAP over UDP adds about 5% to them.
// The nil *uploadLimiter sends at once.
type uploadLimiter struct {
	rate  float64       // bytes per second
	burst time.Duration // what uploadBurst bytes take at rate

	mu   sync.Mutex
	next time.Time // when the bytes reserved so far have been sent
}

// uploadBurst is how many bytes go at once after a pause: two 32 KiB
// blocks, so that a whole block over TCP or HTTP never waits for its own
// size twice.
const uploadBurst = 64 << 10

// newUploadLimiter returns a limiter of bytesPerSecond, nil for none (0 or
// less).
func newUploadLimiter(bytesPerSecond int64) *uploadLimiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	r := float64(bytesPerSecond)
	return &uploadLimiter{rate: r, burst: time.Duration(uploadBurst / r * float64(time.Second))}
}

// wait returns once n more bytes may be sent, or with ctx's error (the
// bytes stay reserved: a request given up still took its place in line).
// Requests are served in the order they reserve.
func (l *uploadLimiter) wait(ctx context.Context, n int) error {
	if l == nil || n <= 0 {
		return nil
	}
	d := l.reserve(time.Now(), n)
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reserve books n bytes at now and returns how long to wait before
// sending them.
func (l *uploadLimiter) reserve(now time.Time, n int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	// After a pause nothing is owed: the bucket is full again.
	if l.next.Before(now) {
		l.next = now
	}
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	// What is owed beyond the burst must be waited for.
	return max(l.next.Sub(now)-l.burst, 0)
}
