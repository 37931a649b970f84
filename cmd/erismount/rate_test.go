package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // bytes a second; 0 for an error
	}{
		{"20Mbit", 2_500_000},
		{"20Mbit/s", 2_500_000},
		{"20mbit", 2_500_000},
		{"1.5Gbit", 187_500_000},
		{"500kbit", 62_500},
		{"64000bit", 8000},
		{"8bit", 1},
		{"2.5MiB", 2_621_440},
		{"2.5MiB/s", 2_621_440},
		{"300K", 307_200},
		{"1048576", 1 << 20},
		{" 20 Mbit ", 2_500_000},
		{"7bit", 0},
		{"0", 0},
		{"-1Mbit", 0},
		{"Mbit", 0},
		{"bit", 0},
		{"NaNbit", 0},
		{"NAN", 0}, // parseSize took NaN (found by FuzzParseRate)
		{"Infbit", 0},
		{"20Xbit", 0},
		{"fast", 0},
		{"", 0},
		{"/s", 0},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseRate(tc.in)
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("parseRate(%q) = %d, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"20Mbit", "2.5MiB/s", "64000bit", "7bit", "NaNbit", "300K"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRate(s)
		if err == nil && r < 1 {
			t.Fatalf("%q: rate %d accepted", s, r)
		}
		if err != nil && r != 0 {
			t.Fatalf("%q: rate %d with error %v", s, r, err)
		}
	})
}

// TestNodeFlagsUsage: --relay and --max-upload-rate are checked before
// anything is served, each refusal a usage error that names the flag.
func TestNodeFlagsUsage(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	store := filepath.Join(tmp, "s.sqlite")
	out, stderr, code := cli(t, "", "--store", store, "publish", src)
	if code != 0 {
		t.Fatalf("publish: %s", stderr)
	}
	urn := strings.Fields(out)[0]
	for _, tc := range []struct {
		name, flag string
		args       []string
	}{
		{"relay value", "--relay", []string{"pin", urn, "--listen", "coap://127.0.0.1:0", "--relay=some"}},
		{"relay without listen", "--relay", []string{"pin", urn, "--relay"}},
		{"rate without listen", "--max-upload-rate", []string{"pin", urn, "--max-upload-rate", "20Mbit"}},
		{"node rate", "--max-upload-rate", []string{"pin", urn, "--listen", "coap://127.0.0.1:0", "--max-upload-rate", "fast"}},
		{"serve rate", "--max-upload-rate", []string{"serve", "--listen", "coap://127.0.0.1:0", "--max-upload-rate", "4bit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := cli(t, "", append([]string{"--store", store}, tc.args...)...)
			if code != exitUsage || !strings.Contains(stderr, tc.flag) {
				t.Fatalf("exit %d, want %d naming %s: %s", code, exitUsage, tc.flag, stderr)
			}
		})
	}
}
