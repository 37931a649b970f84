package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

// cell formats a median as "time · bytes".
func cell(ms []Measure) string {
	if len(ms) == 0 {
		return "–"
	}
	m, ok := median(ms)
	if !ok {
		return "failed: " + ms[0].Err.Error()
	}
	return formatDuration(m.D) + " · " + formatBytes(m.Bytes)
}

// ratioTo is the median time of a over that of b.
func ratioTo(a, b []Measure) (float64, bool) {
	ma, oka := median(a)
	mb, okb := median(b)
	if !oka || !okb || mb.D <= 0 {
		return 0, false
	}
	return float64(ma.D) / float64(mb.D), true
}

// Markdown writes the suite's tables, its goals, where the lazy path
// loses, and what ran on what.
func (r *SuiteResults) Markdown(w io.Writer, command string) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	cfg := r.Config

	p("| tree | files | content | nar | `zstd -%d` | `xz -%d` | ERIS-Nar blocks | ERIS-FS blocks (whole item fetched) |\n|---|--:|--:|--:|--:|--:|--:|--:|\n", cfg.ZstdLevel, cfg.XZLevel)
	for _, it := range r.Items {
		blocks := "–"
		if m, ok := median(it.M[scBlocks]); ok {
			blocks = fmt.Sprintf("%s (%.1f× zstd)", formatBytes(m.Bytes), float64(m.Bytes)/float64(it.ZstdSize))
		}
		p("| %s | %d | %s | %s | %s | %s | %s (%.4f×) | %s |\n", it.Item.Name, it.Item.Files, formatBytes(it.Item.Bytes),
			formatBytes(it.NarSize), formatBytes(it.ZstdSize), formatBytes(it.XZSize),
			formatBytes(it.ERISNarBlocks), float64(it.ERISNarBlocks)/float64(it.ZstdSize), blocks)
	}
	p("\n| tree |")
	for _, sc := range r.Scenarios {
		p(" %s |", sc.Name)
	}
	p("\n|---|")
	for range r.Scenarios {
		p("--:|")
	}
	p("\n")
	for _, it := range r.Items {
		p("| %s |", it.Item.Name)
		for _, sc := range r.Scenarios {
			c := cell(it.M[sc.Key])
			if x, ok := ratioTo(it.M[sc.Key], it.M[scZstd]); ok && sc.Key != scZstd {
				c += fmt.Sprintf(" (%s)", formatX(x))
			}
			p(" %s |", c)
		}
		p("\n")
	}
	p("\nEach cell: median time · bytes the link carried to the client (40 bytes of TCP/IP header counted per 1448-byte segment), and in brackets the time "+
		"over the `zstd -%d` nar's. Nar paths: fetch over HTTP, decompress (`zstd -dc`, `xz -dc`), unpack on disk, "+
		"NarHash checked. Lazy: `erismount mount` cold over CoAP/TCP, `ls -R`, read one small file%s. "+
		"Whole item through ERIS-FS blocks: the tree's blocks into an empty SQLite cache, serialized as a nar "+
		"(narinfo/erisnar, as `substitute-server` does), unpacked, NarHash checked. Through ERIS-Nar: the `zstd -%d` "+
		"nar as ERIS content (32 KiB blocks), fetched from the same peer, decompressed, unpacked, checked. Upgrade: the "+
		"same as the ERIS-FS whole item with the older version's blocks already in the cache. Medians of %d run(s).\n\n",
		cfg.ZstdLevel, r.unmountNote(), cfg.ZstdLevel, cfg.Runs)

	// Goals of issue 15.
	var goals []string
	for _, it := range r.Items {
		if it.Item.Name == "toolchain" {
			if x, ok := ratioTo(it.M[scZstd], it.M[scLsSmall]); ok {
				goals = append(goals, fmt.Sprintf("toolchain `ls -R` + one small file **%.0f×** faster than the zstd nar (goal ≥ 20×: %s)", x, met(x >= 20)))
			}
			if x, ok := ratioTo(it.M[scUpgrade], it.M[scZstd]); ok {
				goals = append(goals, fmt.Sprintf("toolchain upgrade **%.2f×** the zstd nar's time (goal ≤ 0.6×: %s)", x, met(x <= 0.6)))
			}
		}
	}
	for _, it := range r.Items {
		best, name := 0.0, ""
		for _, key := range []string{scBlocks, scERISNar} {
			if x, ok := ratioTo(it.M[key], it.M[scZstd]); ok && (name == "" || x < best) {
				best, name = x, key
			}
		}
		if name != "" {
			goals = append(goals, fmt.Sprintf("%s whole item through the best source (%s) **%.2f×** the zstd nar (goal ≤ 1.2×: %s)", it.Item.Name, name, best, met(best <= 1.2)))
		}
		m, ok1 := median(it.M[scERISNar])
		z, ok2 := median(it.M[scZstd])
		if ok1 && ok2 {
			// Both over the same link, TCP/IP and protocol headers
			// included on either side.
			x := float64(m.Bytes) / float64(z.Bytes)
			goals = append(goals, fmt.Sprintf("%s ERIS-Nar bytes over the link **%.4f×** the zstd nar's (blocks alone %.4f× the file; goal ≤ 1.01×: %s)",
				it.Item.Name, x, float64(it.ERISNarBlocks)/float64(it.ZstdSize), met(x <= 1.01)))
		}
	}
	p("Goals:\n")
	for _, g := range goals {
		p("- %s\n", g)
	}

	// Where the lazy path loses, said plainly.
	var loses []string
	for _, it := range r.Items {
		for _, key := range []string{scBlocks, scUpgrade} {
			if x, ok := ratioTo(it.M[key], it.M[scZstd]); ok && x > 1 {
				b, _ := median(it.M[key])
				loses = append(loses, fmt.Sprintf("%s, %s: %s the zstd nar's time, %s moved against %s", it.Item.Name,
					map[string]string{scBlocks: "whole item as ERIS-FS blocks", scUpgrade: "upgrade as ERIS-FS blocks"}[key],
					formatX(x), formatBytes(b.Bytes), formatBytes(it.ZstdSize)))
			}
		}
	}
	if len(loses) > 0 {
		p("\nWhere the ERIS-FS blocks lose to the compressed nar:\n")
		for _, l := range loses {
			p("- %s\n", l)
		}
	}

	p("\nTrees:\n")
	for _, it := range r.Items {
		p("- %s: %s; small file `%s`; `zstd -%d -T0` took %.1f s, `xz -%d -T0` %.1f s.\n", it.Item.Name, it.Item.Note,
			it.Item.Small, cfg.ZstdLevel, it.ZstdSeconds, cfg.XZLevel, it.XZSeconds)
	}
	rate := "no bandwidth cap"
	if cfg.Shape.Rate > 0 {
		rate = fmt.Sprintf("%g Mbit/s each way", cfg.Shape.Rate/1e6)
	}
	p("\nLink: in-process TCP proxies on loopback adding %v RTT, %s, one for the HTTP nar server and one for the CoAP/TCP "+
		"block server. Machine: %d CPUs (%s), %s; load average %s at the start, %s at the end (shared); kernel caches "+
		"dropped before each measurement: %s. Took %v.\n", cfg.Shape.RTT, rate, runtime.NumCPU(), cpuModel(), runtime.Version(),
		r.LoadBefore, r.LoadAfter, r.DropCaches, r.Elapsed.Round(time.Second))
	p("\nCommand: `%s`\n", command)

	p("\n<details><summary>All samples</summary>\n\n| tree | scenario | samples |\n|---|---|---|\n")
	for _, it := range r.Items {
		for _, sc := range r.Scenarios {
			var parts []string
			for _, m := range it.M[sc.Key] {
				s := formatDuration(m.D) + " · " + formatBytes(m.Bytes)
				if m.Err != nil {
					s += " (" + m.Err.Error() + ")"
				}
				parts = append(parts, s)
			}
			if len(parts) > 0 {
				p("| %s | %s | %s |\n", it.Item.Name, sc.Name, strings.Join(parts, ", "))
			}
		}
	}
	p("\n</details>\n")
}

func formatX(x float64) string {
	if x >= 10 {
		return fmt.Sprintf("%.0f×", x)
	}
	return fmt.Sprintf("%.2f×", x)
}

// unmountNote says that the lazy samples end before the unmount, and how
// long the unmounts took.
func (r *SuiteResults) unmountNote() string {
	var after []Measure
	for _, it := range r.Items {
		for _, m := range it.M[scLsSmall] {
			if m.Err == nil && m.After > 0 {
				after = append(after, Measure{D: m.After})
			}
		}
	}
	med, ok := median(after)
	if !ok {
		return ""
	}
	return fmt.Sprintf(" (the unmount after it is not timed, as the nar paths' deleting the tree they unpacked is not: it took a median of %s)", formatDuration(med.D))
}
