package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cli runs erismount with args in-process and returns stdout, stderr and
// the exit code.
func cli(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func TestEncodeDecode(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "blocks.sqlite")
	content := bytes.Repeat([]byte("erismount encode/decode "), 5000)
	file := filepath.Join(dir, "in")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := cli(t, "", "--store", store, "encode", file)
	if code != 0 {
		t.Fatalf("encode: exit %d: %s", code, stderr)
	}
	urn := strings.TrimSpace(out)
	if !strings.HasPrefix(urn, "urn:eris:B4") { // 32 KiB blocks above 16 KiB
		t.Fatalf("encode printed %q", out)
	}
	// stdin gives the same URN.
	if out2, _, _ := cli(t, string(content), "--store", store, "encode", "-"); strings.TrimSpace(out2) != urn {
		t.Errorf("encode - printed %q, want %q", out2, urn)
	}
	got, stderr, code := cli(t, "", "--store", store, "decode", urn)
	if code != 0 || got != string(content) {
		t.Fatalf("decode: exit %d, %d bytes (want %d): %s", code, len(got), len(content), stderr)
	}
	// The encoded blocks are pinned under the URN.
	pins, _, code := cli(t, "", "--store", store, "--json", "pins")
	if code == 0 && !strings.Contains(pins, urn) {
		t.Errorf("pins does not list %s: %s", urn, pins)
	}
}

func TestCLIErrors(t *testing.T) {
	store := filepath.Join(t.TempDir(), "blocks.sqlite")
	cases := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"no such file", []string{"--store", store, "encode", "/nonexistent/file"}, exitUsage, "no such file"},
		{"bad URN", []string{"--store", store, "decode", "urn:eris:XYZ"}, exitUsage, "base32 characters"},
		{"not a URN", []string{"--store", store, "decode", "hello"}, exitUsage, "does not start with"},
		{"missing blocks", []string{"--store", store, "decode", "urn:eris:BIAD77QDJMFAKZYH2DXBUZYAP3MXZ3DJZVFYQ5DFWC6T65WSFCU5S2IT4YZGJ7AC4SYQMP2DM2ANS2ZTCP3DJJIRV733CRAAHOSWIYZM3M"}, exitUnavailable, "not found"},
		{"unknown flag", []string{"--frobnicate"}, exitUsage, "unknown flag"},
		{"wrong arg count", []string{"decode"}, exitUsage, "accepts 1 arg"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"bad block size", []string{"--store", store, "encode", "--block-size", "4096", "-"}, exitUsage, "want 1024 or 32768"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, code := cli(t, "", c.args...)
			if code != c.code || !strings.Contains(stderr, c.contains) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, c.code, c.contains)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "512K": 512 << 10, "64MiB": 64 << 20, "20G": 20 << 30, "1.5TiB": 3 << 39, "2gb": 2 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "0", "lots", "5X", "1e30T"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) succeeded", bad)
		}
	}
}
