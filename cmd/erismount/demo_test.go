package main

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDemo runs `erismount demo` as a new user would: it must mount, read,
// run the program from the mount and fetch only a small part of the tree.
func TestDemo(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("demo mounts with DirectMount, which needs root here")
	}
	out, stderr, code := cli(t, "", "demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"published urn:eris:", "mounted at", "bin/hello says: \"hello from a lazily fetched, verified tree\"", "README: \"erismount demo tree"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	m := regexp.MustCompile(`\(([0-9.]+)%\) from the peer`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no fetched fraction in:\n%s", out)
	}
	if pct, _ := strconv.ParseFloat(m[1], 64); pct <= 0 || pct > 5 {
		t.Errorf("demo fetched %s%% of the tree, want a small part", m[1])
	}
}
