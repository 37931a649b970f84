package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"erismount/cache"
	"erismount/fetcher"
	"erismount/fusefs"
	"erismount/narinfo/subst"
)

// TestMetricsScrape serves the collector over real HTTP and parses what a
// Prometheus server would scrape.
func TestMetricsScrape(t *testing.T) {
	src := &metricSources{
		tiered: func() cache.TieredStats {
			return cache.TieredStats{MemoryHits: 7, MemoryMisses: 3, DiskHits: 2, DiskMisses: 1, RemoteHits: 1, RemoteCorrupt: 2}
		},
		peers: func() []fetcher.PeerStats {
			return []fetcher.PeerStats{{URL: "coap://127.0.0.1:5683", State: "live", Requests: 5, Blocks: 4, Bytes: 4 * 32768, Corrupt: 1,
				Latency: fetcher.Histogram{Bounds: []float64{0.001, 0.01}, Counts: []uint64{1, 2, 1}, Count: 4, Sum: 0.05}}}
		},
		fuse:  func() fusefs.Stats { return fusefs.Stats{Reads: 9, ReadBytes: 4096, EIO: 1, Timeouts: 1} },
		subst: func() subst.Stats { return subst.Stats{Narinfos: 2, Nars: 1, NarsAborted: 1, NarBytes: 4096} },
		server: func() fetcher.ServerStats {
			return fetcher.ServerStats{Gets: 5, Blocks: 3, NotFound: 1, Bytes: 3 * 1024, Stored: 2, Rejected: 1}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &app{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	addr, err := a.serveMetrics(ctx, "127.0.0.1:0", src)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		f, ok := families[name]
		if !ok {
			t.Fatalf("no metric %s", name)
		}
	next:
		for _, m := range f.Metric {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.Label {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s with %v", name, labels)
		return 0
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"erismount_cache_hits_total", []string{"tier", "memory"}, 7},
		{"erismount_cache_misses_total", []string{"tier", "disk"}, 1},
		{"erismount_cache_corrupt_total", []string{"tier", "remote"}, 2},
		{"erismount_peer_fetched_bytes_total", []string{"peer", "coap://127.0.0.1:5683"}, 4 * 32768},
		{"erismount_peer_corrupt_blocks_total", nil, 1},
		{"erismount_peer_up", nil, 1},
		{"erismount_peer_latency_seconds", nil, 4},
		{"erismount_fuse_served_bytes_total", nil, 4096},
		{"erismount_fuse_deadline_expired_total", nil, 1},
		{"erismount_server_requests_total", []string{"result", "error"}, 1},
		{"erismount_server_served_bytes_total", nil, 3 * 1024},
		{"erismount_server_uploads_total", []string{"outcome", "rejected"}, 1},
		{"erismount_substitute_nars_total", []string{"outcome", "aborted"}, 1},
		{"erismount_substitute_served_bytes_total", nil, 4096},
	}
	for _, c := range checks {
		if got := value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") && !strings.Contains(ct, "openmetrics") {
		t.Errorf("content type %q", ct)
	}
}
