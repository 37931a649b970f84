package main

import (
	"io/fs"
	"syscall"
	"testing"
	"time"
)

func TestCell(t *testing.T) {
	ms := time.Millisecond
	eio := &fs.PathError{Op: "read", Path: "x", Err: syscall.EIO}
	over := &OverTimeError{Limit: 5 * time.Minute}
	nar := Cell{{D: 10 * time.Second}}
	for _, tc := range []struct {
		name    string
		c       Cell
		str     string
		speedup string
	}{
		{"one", Cell{{D: 250 * ms}}, "250 ms", "40×"},
		{"median of three", Cell{{D: 3 * time.Second}, {D: 1 * time.Second}, {D: 2 * time.Second}}, "2.00 s", "5.0×"},
		{"lower middle of two", Cell{{D: 4 * time.Second}, {D: 20 * time.Second}}, "4.00 s", "2.5×"},
		{"slower", Cell{{D: 40 * time.Second}}, "40.0 s", "0.25×"},
		{"one failed", Cell{{D: 2 * time.Second}, {Err: eio}, {D: 4 * time.Second}}, "2.00 s (1 of 3: EIO)", "5.0×"},
		{"all failed", Cell{{Err: eio}, {Err: eio}}, "failed: EIO", "–"},
		{"over time", Cell{{D: 5 * time.Minute, Err: over}}, "> 300.0 s", "< 0.03×"},
		{"not warm", Cell{{Err: errNotWarm}}, "–", "–"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.String(); got != tc.str {
				t.Errorf("String() = %q, want %q", got, tc.str)
			}
			if got := speedup(nar, tc.c); got != tc.speedup {
				t.Errorf("speedup = %q, want %q", got, tc.speedup)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{formatDuration(1500 * time.Microsecond), "1.5 ms"},
		{formatDuration(42 * time.Millisecond), "42 ms"},
		{formatDuration(2346 * time.Millisecond), "2.35 s"},
		{formatDuration(83 * time.Second), "83.0 s"},
		{formatBytes(999), "999 B"},
		{formatBytes(3 << 19), "1.5 MiB"},
		{inverse(Cell{{D: time.Second}}, Cell{{D: 3 * time.Second}}), "3.00×"},
		{inverse(Cell{{D: time.Minute}}, Cell{{Err: &OverTimeError{Limit: 5 * time.Minute}}}), "> 5.0×"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
