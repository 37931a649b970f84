package main

import (
	"path/filepath"
	"strings"
	"testing"

	"erismount/narinfo"
)

func TestStoreDirOf(t *testing.T) {
	const h = "0q7pcz9hnscl1x29v4nws03i2ii5c8vc"
	for _, c := range []struct {
		path, dir, base string
	}{
		{"/nix/store/" + h + "-hello/bin/hello", "/nix/store", h + "-hello"},
		{"/gnu/store/" + h + "-hello-2.12", "/gnu/store", h + "-hello-2.12"},
		{"/nix/store/" + h + "-a/" + h + "-b/x", "/nix/store", h + "-a"}, // the shallowest
		{"/nix/store/./" + h + "-hello//bin/../bin/hello", "/nix/store", h + "-hello"},
		{"/srv/my store/" + h + "-x/y", "/srv/my store", h + "-x"},
		{"nix/store/" + h + "-hello/bin/hello", "", ""}, // relative
		{"/usr/bin/env", "", ""},
		{"/" + h + "-x/bin", "", ""}, // no store directory
		{"/nix/store/" + h[:31] + "-x/bin", "", ""},
		{"", "", ""},
	} {
		dir, base, err := storeDirOf(c.path)
		if dir != c.dir || base != c.base || (err == nil) != (c.dir != "") {
			t.Errorf("storeDirOf(%q) = %q, %q, %v; want %q, %q", c.path, dir, base, err, c.dir, c.base)
		}
	}
}

// FuzzStoreDirOf: whatever the path, a store directory found is clean and
// absolute, dir/base is a valid store path, and the path lies below it.
func FuzzStoreDirOf(f *testing.F) {
	f.Add("/nix/store/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-hello/bin/hello")
	f.Add("/gnu/store/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-x")
	f.Add("relative/0q7pcz9hnscl1x29v4nws03i2ii5c8vc-x")
	f.Fuzz(func(t *testing.T, p string) {
		dir, base, err := storeDirOf(p)
		if err != nil {
			return
		}
		if _, _, err := narinfo.SplitStorePath(dir + "/" + base); err != nil {
			t.Fatalf("storeDirOf(%q) = %q, %q: not a store path: %v", p, dir, base, err)
		}
		clean := filepath.Clean(p)
		if item := dir + "/" + base; clean != item && !strings.HasPrefix(clean, item+"/") {
			t.Fatalf("storeDirOf(%q) = %q, %q: the path is not below it", p, dir, base)
		}
	})
}
