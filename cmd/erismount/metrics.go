package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"erismount/cache"
	"erismount/cache/s3"
	"erismount/fetcher"
	"erismount/fusefs"
	narinfosource "erismount/narinfo/source"
	"erismount/narinfo/subst"
)

// metricSources are the counters a command has: each is a snapshot
// function of a package's plain Stats (nil when the command has none). The
// packages stay free of Prometheus; this file only translates.
type metricSources struct {
	tiered func() cache.TieredStats
	store  func() cache.SQLiteStats // the block store's Health
	peers  func() []fetcher.PeerStats
	fuse   func() fusefs.Stats
	server func() fetcher.ServerStats
	subst  func() subst.Stats
	// narinfos is the narinfo cache of substitute-server --upstream.
	narinfos func() narinfosource.CacheStats
	s3       *s3.Store // serve --store s3://…: its requests (metrics_s3.go)
}

// statsCollector is a prometheus.Collector reading the sources at scrape
// time, so counting costs nothing between scrapes.
type statsCollector struct{ src *metricSources }

var (
	descCacheHits   = prometheus.NewDesc("erismount_cache_hits_total", "Block gets answered by a tier.", []string{"tier"}, nil)
	descCacheMisses = prometheus.NewDesc("erismount_cache_misses_total", "Block gets a tier could not answer.", []string{"tier"}, nil)
	descCacheErrors = prometheus.NewDesc("erismount_cache_errors_total", "Tier failures other than a miss.", []string{"tier"}, nil)
	descCacheBad    = prometheus.NewDesc("erismount_cache_corrupt_total", "Blocks that failed verification in a tier (never returned).", []string{"tier"}, nil)
	descMerged      = prometheus.NewDesc("erismount_cache_merged_total", "Block gets that waited for a fetch of the same block already running.", nil, nil)
	descWriteBack   = prometheus.NewDesc("erismount_cache_writebacks_total", "Fetched blocks written back to the disk tier, by outcome.", []string{"outcome"}, nil)

	descDiskDegraded = prometheus.NewDesc("erismount_cache_disk_degraded", "1 while the block store cannot be written (a full disk, or in memory only): blocks are served but not kept.", nil, nil)
	descDiskFailed   = prometheus.NewDesc("erismount_cache_disk_write_failures_total", "Write transactions of the block store that failed (a full disk, a damaged file).", nil, nil)
	descDiskRefused  = prometheus.NewDesc("erismount_cache_disk_refused_total", "Blocks not kept because the block store could not be written.", nil, nil)
	descDiskFull     = prometheus.NewDesc("erismount_cache_disk_full_total", "Blocks not kept because pinned blocks fill the hard cap.", nil, nil)
	descDiskEvicted  = prometheus.NewDesc("erismount_cache_disk_evictions_total", "Blocks evicted from the block store, least recently used first.", nil, nil)

	descPeerUp       = prometheus.NewDesc("erismount_peer_up", "1 if the peer is live, 0 if dead or being probed.", []string{"peer"}, nil)
	descPeerRequests = prometheus.NewDesc("erismount_peer_requests_total", "Block requests sent to the peer.", []string{"peer"}, nil)
	descPeerHedges   = prometheus.NewDesc("erismount_peer_hedged_requests_total", "Requests sent because an earlier peer was slower than usual.", []string{"peer"}, nil)
	descPeerBlocks   = prometheus.NewDesc("erismount_peer_blocks_total", "Verified blocks received from the peer.", []string{"peer"}, nil)
	descPeerBytes    = prometheus.NewDesc("erismount_peer_fetched_bytes_total", "Bytes of verified blocks fetched from the peer.", []string{"peer"}, nil)
	descPeerNotFound = prometheus.NewDesc("erismount_peer_not_found_total", "Answers 'no such block'.", []string{"peer"}, nil)
	descPeerErrors   = prometheus.NewDesc("erismount_peer_errors_total", "Failed requests (transport errors, bad answers, timeouts).", []string{"peer"}, nil)
	descPeerTimeouts = prometheus.NewDesc("erismount_peer_timeouts_total", "Requests the peer did not answer in time.", []string{"peer"}, nil)
	descPeerCorrupt  = prometheus.NewDesc("erismount_peer_corrupt_blocks_total", "Blocks from the peer that failed verification.", []string{"peer"}, nil)
	descPeerLatency  = prometheus.NewDesc("erismount_peer_latency_seconds", "Answer time of the peer.", []string{"peer"}, nil)

	descFuseReads    = prometheus.NewDesc("erismount_fuse_reads_total", "FUSE read requests answered.", nil, nil)
	descFuseBytes    = prometheus.NewDesc("erismount_fuse_served_bytes_total", "Bytes returned to readers through FUSE.", nil, nil)
	descFuseEIO      = prometheus.NewDesc("erismount_fuse_eio_total", "FUSE operations that failed with EIO.", nil, nil)
	descFuseDeadline = prometheus.NewDesc("erismount_fuse_deadline_expired_total", "FUSE operations that failed because their deadline passed.", nil, nil)
	descFuseIntr     = prometheus.NewDesc("erismount_fuse_interrupted_total", "FUSE operations the kernel interrupted.", nil, nil)
	descFuseAhead    = prometheus.NewDesc("erismount_fuse_readahead_bytes_total", "Bytes prefetched by erismount's readahead.", nil, nil)
	descTreeAhead    = prometheus.NewDesc("erismount_fuse_tree_ahead_files_total", "Files fetched ahead of a reader going through the tree in order.", nil, nil)
	descTreeAheadB   = prometheus.NewDesc("erismount_fuse_tree_ahead_bytes_total", "Bytes of the files fetched ahead of a reader going through the tree.", nil, nil)

	descServerGets    = prometheus.NewDesc("erismount_server_requests_total", "Block requests that reached the store, by result.", []string{"result"}, nil)
	descServerBytes   = prometheus.NewDesc("erismount_server_served_bytes_total", "Bytes of blocks served to peers.", nil, nil)
	descServerUploads = prometheus.NewDesc("erismount_server_uploads_total", "Block uploads (PUT/POST), by outcome.", []string{"outcome"}, nil)
	descServerErrors  = prometheus.NewDesc("erismount_server_store_errors_total", "Store failures and timeouts while serving.", nil, nil)

	descSubstNarinfos = prometheus.NewDesc("erismount_substitute_narinfo_requests_total", "Narinfo requests, by result.", []string{"result"}, nil)
	descSubstNars     = prometheus.NewDesc("erismount_substitute_nars_total", "Nar responses, by outcome (aborted: a block missing or corrupt, a mismatch, or the client gone).", []string{"outcome"}, nil)
	descSubstBytes    = prometheus.NewDesc("erismount_substitute_served_bytes_total", "Nar bytes sent to clients.", nil, nil)

	descSourceNars  = prometheus.NewDesc("erismount_substitute_source_nars_total", "Nars by the source that produced them (tree, eris-nar, upstream) and outcome (verified, aborted, failed: gave way before the first byte).", []string{"source", "outcome"}, nil)
	descSourceMoved = prometheus.NewDesc("erismount_substitute_source_moved_bytes_total", "Bytes a nar source brought over the network: compressed downloads (upstream), blocks from peers (tree, eris-nar).", []string{"source"}, nil)
	descSourceSent  = prometheus.NewDesc("erismount_substitute_source_nar_bytes_total", "Nar bytes a source produced.", []string{"source"}, nil)
	descNarinfoHits = prometheus.NewDesc("erismount_narinfo_cache_lookups_total", "Narinfo lookups through the SQLite narinfo cache, by result (hit, negative_hit, miss: asked upstream).", []string{"result"}, nil)
)

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if c.src.tiered != nil {
		s := c.src.tiered()
		for _, t := range []struct {
			tier             string
			hits, miss, errs int64
		}{{"memory", s.MemoryHits, s.MemoryMisses, 0}, {"disk", s.DiskHits, s.DiskMisses, s.DiskErrors}, {"remote", s.RemoteHits, s.RemoteMisses, s.RemoteErrors}} {
			counter(descCacheHits, t.hits, t.tier)
			counter(descCacheMisses, t.miss, t.tier)
			counter(descCacheErrors, t.errs, t.tier)
		}
		counter(descCacheBad, s.DiskDamaged, "disk")
		counter(descCacheBad, s.RemoteCorrupt, "remote")
		counter(descMerged, s.Merged)
		counter(descWriteBack, s.WriteBacks, "written")
		counter(descWriteBack, s.WriteBackErrors, "error")
		counter(descWriteBack, s.WriteBackDropped, "dropped")
	}
	if c.src.store != nil {
		s := c.src.store()
		degraded := 0.0
		if s.Degraded {
			degraded = 1
		}
		ch <- prometheus.MustNewConstMetric(descDiskDegraded, prometheus.GaugeValue, degraded)
		counter(descDiskFailed, s.FailedCommits)
		counter(descDiskRefused, s.Refused)
		counter(descDiskFull, s.Rejected)
		counter(descDiskEvicted, s.Evicted)
	}
	if c.src.peers != nil {
		for _, p := range c.src.peers() {
			up := 0.0
			if p.State == "live" {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descPeerUp, prometheus.GaugeValue, up, p.URL)
			counter(descPeerRequests, int64(p.Requests), p.URL)
			counter(descPeerHedges, int64(p.Hedges), p.URL)
			counter(descPeerBlocks, int64(p.Blocks), p.URL)
			counter(descPeerBytes, int64(p.Bytes), p.URL)
			counter(descPeerNotFound, int64(p.NotFound), p.URL)
			counter(descPeerErrors, int64(p.Errors), p.URL)
			counter(descPeerTimeouts, int64(p.Timeouts), p.URL)
			counter(descPeerCorrupt, int64(p.Corrupt), p.URL)
			ch <- prometheus.MustNewConstHistogram(descPeerLatency, p.Latency.Count, p.Latency.Sum, cumulative(p.Latency), p.URL)
		}
	}
	if c.src.fuse != nil {
		s := c.src.fuse()
		counter(descFuseReads, s.Reads)
		counter(descFuseBytes, s.ReadBytes)
		counter(descFuseEIO, s.EIO)
		counter(descFuseDeadline, s.Timeouts)
		counter(descFuseIntr, s.Interrupted)
		counter(descFuseAhead, s.ReadaheadBytes)
		counter(descTreeAhead, s.TreeAheadFiles)
		counter(descTreeAheadB, s.TreeAheadBytes)
	}
	if c.src.server != nil {
		s := c.src.server()
		counter(descServerGets, int64(s.Blocks), "found")
		counter(descServerGets, int64(s.NotFound), "not_found")
		counter(descServerGets, int64(s.Gets-s.Blocks-s.NotFound), "error")
		counter(descServerBytes, int64(s.Bytes))
		counter(descServerUploads, int64(s.Stored), "stored")
		counter(descServerUploads, int64(s.Rejected), "rejected")
		counter(descServerErrors, int64(s.Errors))
	}
	if c.src.s3 != nil {
		collectS3(c.src.s3, counter)
	}
	if c.src.subst != nil {
		s := c.src.subst()
		counter(descSubstNarinfos, s.Narinfos, "served")
		counter(descSubstNarinfos, s.NarinfoMisses, "not_found")
		counter(descSubstNarinfos, s.Rejected, "rejected")
		counter(descSubstNars, s.Nars, "verified")
		counter(descSubstNars, s.NarsAborted, "aborted")
		counter(descSubstNars, s.NarsFailed, "failed")
		counter(descSubstBytes, s.NarBytes)
		for k, v := range s.Sources {
			counter(descSourceNars, v.Nars, string(k), "verified")
			counter(descSourceNars, v.Aborted, string(k), "aborted")
			counter(descSourceNars, v.Failed, string(k), "failed")
			counter(descSourceMoved, v.Moved, string(k))
			counter(descSourceSent, v.Sent, string(k))
		}
	}
	if c.src.narinfos != nil {
		s := c.src.narinfos()
		counter(descNarinfoHits, s.Hits, "hit")
		counter(descNarinfoHits, s.NegativeHits, "negative_hit")
		counter(descNarinfoHits, s.Misses, "miss")
	}
}

// cumulative turns fetcher's per-bucket counts into Prometheus's
// cumulative buckets.
func cumulative(h fetcher.Histogram) map[float64]uint64 {
	b := make(map[float64]uint64, len(h.Bounds))
	var sum uint64
	for i, bound := range h.Bounds {
		if i < len(h.Counts) {
			sum += h.Counts[i]
		}
		b[bound] = sum
	}
	return b
}

// serveMetrics serves OpenMetrics on addr (host:port) until ctx ends. It
// returns once listening, with the address it listens on.
func (a *app) serveMetrics(ctx context.Context, addr string, src *metricSources) (string, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(statsCollector{src})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", usageError{fmt.Errorf("--metrics %s: %w", addr, err)}
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics server", "err", err)
		}
	}()
	a.log.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return ln.Addr().String(), nil
}
