package fetcher

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// latencyBounds are the upper bounds, in seconds, of the latency
// histogram buckets: 0.5 ms to 10 s.
var latencyBounds = []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10}

// Histogram is a latency distribution as plain numbers (what a Prometheus
// histogram is built from).
type Histogram struct {
	// Bounds are the bucket upper bounds in seconds, ascending.
	Bounds []float64
	// Counts[i] counts observations in (Bounds[i-1], Bounds[i]]; the last
	// element, Counts[len(Bounds)], counts those above every bound. Counts
	// are per bucket, not cumulative.
	Counts []uint64
	// Count and Sum (seconds) are over all observations.
	Count uint64
	Sum   float64
}

// PeerStats are a pool's counters for one peer since the pool started.
type PeerStats struct {
	URL string
	// State is "live", "dead" (skipped until its backoff ends) or
	// "probing" (one request is testing whether it is back).
	State string
	// Requests counts requests sent; Hedges those of them sent because an
	// earlier peer was slower than usual for the same block.
	Requests uint64
	Hedges   uint64
	// Probes counts the requests that tested whether a dead peer is back
	// (part of Requests).
	Probes uint64
	// Blocks and Bytes count verified blocks received.
	Blocks uint64
	Bytes  uint64
	// NotFound counts answers "no such block".
	NotFound uint64
	// Errors counts failed requests (transport errors, unexpected answers
	// and timeouts); Timeouts those that did not answer in time.
	Errors   uint64
	Timeouts uint64
	// Corrupt counts blocks that failed verification (never returned).
	Corrupt uint64
	// Latency is the distribution of answer times (blocks and not-found).
	Latency Histogram
	// Estimate is the smoothed latency used to rank peers, HedgeAfter the
	// delay after which a request to this peer is hedged to the next one.
	Estimate   time.Duration
	HedgeAfter time.Duration
}

// histogram records latencies with atomic counters.
type histogram struct {
	counts [15]atomic.Uint64 // len(latencyBounds)+1
	count  atomic.Uint64
	sumNs  atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i, _ := slices.BinarySearch(latencyBounds, s)
	h.counts[i].Add(1)
	h.count.Add(1)
	h.sumNs.Add(int64(d))
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Bounds: slices.Clone(latencyBounds), Counts: make([]uint64, len(latencyBounds)+1)}
	for i := range out.Counts {
		out.Counts[i] = h.counts[i].Load()
	}
	out.Count = h.count.Load()
	out.Sum = time.Duration(h.sumNs.Load()).Seconds()
	return out
}

// latencyWindow keeps the last answer times of a peer to estimate the
// quantile after which its requests are hedged.
type latencyWindow struct {
	mu      sync.Mutex
	samples [64]time.Duration
	n       int // samples recorded, capped at len(samples)
	next    int
	fresh   int           // samples since the quantile was computed
	q       time.Duration // cached quantile
	ewma    float64       // seconds
}

// minSamples is how many answers a peer needs before its own quantile is
// trusted for hedging.
const minSamples = 8

func (w *latencyWindow) add(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples[w.next] = d
	w.next = (w.next + 1) % len(w.samples)
	w.n = min(w.n+1, len(w.samples))
	w.fresh++
	if w.ewma == 0 {
		w.ewma = d.Seconds()
	} else {
		w.ewma += 0.2 * (d.Seconds() - w.ewma)
	}
}

// quantile returns the q-quantile of recent samples, or ok=false before
// minSamples; it is recomputed every eighth sample.
func (w *latencyWindow) quantile(q float64) (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n < minSamples {
		return 0, false
	}
	if w.fresh >= 8 || w.q == 0 {
		s := slices.Clone(w.samples[:w.n])
		slices.Sort(s)
		w.q = s[min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)]
		w.fresh = 0
	}
	return w.q, true
}

func (w *latencyWindow) estimate() (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return time.Duration(w.ewma * float64(time.Second)), w.ewma > 0
}
