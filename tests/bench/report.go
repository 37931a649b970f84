package main

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// transportName is how a CoAP scheme is called in the table.
func transportName(tr string) string {
	switch tr {
	case "coap":
		return "CoAP/UDP"
	case "coap+tcp":
		return "CoAP/TCP"
	}
	return tr
}

// Markdown writes the table of medians, the two goals, what was measured
// on what, and every sample. command is the command line that ran it.
func (r *Results) Markdown(w io.Writer, command string) {
	cfg := r.Config
	first := cfg.Transports[0]
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }

	p("| operation | whole nar over HTTP |")
	for _, tr := range cfg.Transports {
		p(" lazy cold, %s | speed-up |", transportName(tr))
	}
	p(" lazy warm (SQLite) | lazy hot | fetched cold, %s |\n", transportName(first))
	p("|---|--:|")
	for range cfg.Transports {
		p("--:|--:|")
	}
	p("--:|--:|--:|\n")
	for i, op := range r.Ops {
		p("| %s | %s |", op.Name, r.Nar[i])
		for _, tr := range cfg.Transports {
			p(" %s | %s |", r.Cold[tr][i], speedup(r.Nar[i], r.Cold[tr][i]))
		}
		hot := r.Hot[i].String()
		if op.Key == "ready" {
			hot = "–"
		}
		p(" %s | %s | %s |\n", r.Warm[i], hot, formatBytes(medianBytes(r.Wire[first][i])))
	}

	p("\nSpeed-up is the whole-nar time over the lazy cold time (above 1: lazy is faster). "+
		"Whole nar = fetch the nar over HTTP and unpack it (NarHash checked), then the operation. "+
		"Lazy cold = `erismount mount` with an empty block store, then the operation; "+
		"warm = the same with the blocks in SQLite (a fresh mount); hot = the operation again on that mount. "+
		"Fetched = bytes that crossed the link to the client in the cold run (all headers included), against a nar of %s. "+
		"Medians of %d runs", formatBytes(r.NarSize), cfg.Runs)
	if cfg.OpTimeout > 0 {
		p("; a lazy operation is stopped after %v (\"> %s\")", cfg.OpTimeout, formatDuration(cfg.OpTimeout))
	}
	p("; \"EIO\" is a read that failed at erismount's deadline.\n\n")

	// The goals of issue 10.
	for _, tr := range cfg.Transports {
		var goals []string
		if i := r.op(opLsSmall); i >= 0 {
			s, ok := ratioOf(r.Nar[i], r.Cold[tr][i])
			goals = append(goals, fmt.Sprintf("`ls -R` + one small file is **%s** faster than the whole nar (goal ≥ 5×: %s)",
				speedup(r.Nar[i], r.Cold[tr][i]), met(ok && s >= 5)))
		}
		if i := r.op(opReadAll); i >= 0 {
			f, ok := ratioOf(r.Cold[tr][i], r.Nar[i])
			goals = append(goals, fmt.Sprintf("reading everything with 1 reader takes **%s** the whole-nar time (goal ≤ 1.5×: %s)",
				inverse(r.Nar[i], r.Cold[tr][i]), met(ok && f <= 1.5)))
		}
		if i := r.op(opReadAllN); i >= 0 {
			f, ok := ratioOf(r.Cold[tr][i], r.Nar[i])
			goals = append(goals, fmt.Sprintf("with %d readers **%s** (%s)", cfg.Readers, inverse(r.Nar[i], r.Cold[tr][i]), met(ok && f <= 1.5)))
		}
		if len(goals) > 0 {
			p("- %s: %s.\n", transportName(tr), strings.Join(goals, "; "))
		}
	}

	t := r.Tree
	p("\nTree: %d files (%d executable), %d directories, %d symlinks, %s of content; "+
		"nar %s; ERIS-FS index %s, %d blocks. ", t.Files, r.Encode.Executables, t.Dirs, t.Links,
		formatBytes(t.Bytes), formatBytes(r.NarSize), formatBytes(r.Encode.IndexBytes), r.Encode.Blocks)
	rate := "no bandwidth cap"
	if cfg.Shape.Rate > 0 {
		rate = fmt.Sprintf("%g Mbit/s each way", cfg.Shape.Rate/1e6)
	}
	p("Link: an in-process proxy on loopback adding %v RTT, %s (datagrams dropped: %d); "+
		"its TCP side ends TCP locally, so the HTTP baseline gets no handshake, slow start or loss.\n",
		cfg.Shape.RTT, rate, r.Dropped)
	var uts unix.Utsname
	kernel := "?"
	if unix.Uname(&uts) == nil {
		kernel = unix.ByteSliceToString(uts.Release[:])
	}
	p("Machine: %d CPUs (%s), Linux %s, %s; load average %s at the start, %s at the end "+
		"(the machine is shared); kernel caches dropped before each cold and warm run: %s. "+
		"Took %v.\n", runtime.NumCPU(), cpuModel(), kernel, runtime.Version(), r.LoadBefore, r.LoadAfter,
		r.DropCaches, r.Elapsed.Round(time.Second))
	p("\nCommand: `%s`\n", command)

	// Every sample, for whoever doubts a median.
	p("\n<details><summary>All samples</summary>\n\n")
	p("| operation | column | samples |\n|---|---|---|\n")
	row := func(name, col string, c Cell) {
		parts := make([]string, len(c))
		for i, s := range c {
			switch {
			case errors.Is(s.Err, errNotWarm):
				parts[i] = "–"
			case s.Err != nil:
				parts[i] = formatDuration(s.D) + " (" + s.Err.Error() + ")"
			default:
				parts[i] = formatDuration(s.D)
			}
		}
		p("| %s | %s | %s |\n", name, col, strings.Join(parts, ", "))
	}
	for i, op := range r.Ops {
		name := op.Name
		row(name, "whole nar", r.Nar[i])
		row(name, "unpacked tree, again", r.Local[i])
		for _, tr := range cfg.Transports {
			row(name, "lazy cold "+transportName(tr), r.Cold[tr][i])
			wire := make([]string, len(r.Wire[tr][i]))
			for k, b := range r.Wire[tr][i] {
				wire[k] = formatBytes(b)
			}
			p("| %s | fetched cold %s | %s |\n", name, transportName(tr), strings.Join(wire, ", "))
		}
		row(name, "lazy warm", r.Warm[i])
		row(name, "lazy hot", r.Hot[i])
	}
	p("\n</details>\n")
}

// op is the index of the operation key in r.Ops, or -1.
func (r *Results) op(key string) int {
	for i, op := range r.Ops {
		if op.Key == key {
			return i
		}
	}
	return -1
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// ratioOf is the ratio of the medians of a and b, if both have one.
func ratioOf(a, b Cell) (float64, bool) {
	ma, oka := a.Median()
	mb, okb := b.Median()
	return ratio(ma, mb), oka && okb
}

// inverse formats lazy over nar: how many times the whole-nar time the
// lazy path takes, or a bound when it was stopped at the time limit.
func inverse(nar, lazy Cell) string {
	n, ok := nar.Median()
	if !ok {
		return "–"
	}
	if l, ok := lazy.Median(); ok {
		return fmt.Sprintf("%.2f×", ratio(l, n))
	}
	var ot *OverTimeError
	if _, err := lazy.failed(); errors.As(err, &ot) {
		return fmt.Sprintf("> %.1f×", ratio(ot.Limit, n))
	}
	return "failed"
}

// medianBytes is the median of counts (the lower middle one).
func medianBytes(s []int64) int64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	return c[(len(c)-1)/2]
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func formatRatio(nar, lazy time.Duration) string {
	x := ratio(nar, lazy)
	switch {
	case x >= 10:
		return fmt.Sprintf("%.0f×", x)
	case x >= 1:
		return fmt.Sprintf("%.1f×", x)
	}
	return fmt.Sprintf("%.2f×", x)
}

func formatDuration(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.1f ms", float64(d)/1e6)
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
