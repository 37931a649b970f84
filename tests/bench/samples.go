package main

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"
)

// A Sample is one measurement: how long, or how it failed.
type Sample struct {
	D   time.Duration
	Err error
}

// A Cell holds the samples of one operation in one column, one per run.
type Cell []Sample

// errNotWarm is the warm and hot samples of an operation whose cold run
// failed: they are not measured.
var errNotWarm = errors.New("not measured: the cold run failed")

// OverTimeError is an operation stopped at the -op-timeout limit.
type OverTimeError struct{ Limit time.Duration }

func (e *OverTimeError) Error() string { return fmt.Sprintf("stopped after %v", e.Limit) }

// Median is the median of the successful samples (the lower middle one of
// an even count), and false if none succeeded.
func (c Cell) Median() (time.Duration, bool) {
	var ds []time.Duration
	for _, s := range c {
		if s.Err == nil {
			ds = append(ds, s.D)
		}
	}
	if len(ds) == 0 {
		return 0, false
	}
	slices.Sort(ds)
	return ds[(len(ds)-1)/2], true
}

// failed returns how many samples failed and the first failure.
func (c Cell) failed() (int, error) {
	n := 0
	var first error
	for _, s := range c {
		if s.Err != nil {
			if first == nil {
				first = s.Err
			}
			n++
		}
	}
	return n, first
}

// String is the median, with what failed if anything did.
func (c Cell) String() string {
	m, ok := c.Median()
	n, err := c.failed()
	switch {
	case n == 0:
		return formatDuration(m)
	case !ok:
		var ot *OverTimeError
		switch {
		case errors.As(err, &ot):
			return "> " + formatDuration(ot.Limit)
		case errors.Is(err, errNotWarm):
			return "–"
		}
		return "failed: " + reason(err)
	}
	return fmt.Sprintf("%s (%d of %d: %s)", formatDuration(m), n, len(c), reason(err))
}

// reason is a failure in a few characters.
func reason(err error) string {
	var ot *OverTimeError
	switch {
	case errors.As(err, &ot):
		return "> " + formatDuration(ot.Limit)
	case errors.Is(err, syscall.EIO):
		return "EIO"
	case errors.Is(err, errNotWarm):
		return "cold run failed"
	}
	return "error"
}

// speedup formats the whole-nar median over the lazy one: how many times
// faster the lazy path is. A lazy cell stopped at the time limit gives a
// bound; one that failed otherwise gives none.
func speedup(nar, lazy Cell) string {
	n, ok := nar.Median()
	if !ok {
		return "–"
	}
	if l, ok := lazy.Median(); ok {
		return formatRatio(n, l)
	}
	var ot *OverTimeError
	if _, err := lazy.failed(); errors.As(err, &ot) {
		return "< " + formatRatio(n, ot.Limit)
	}
	return "–"
}
