package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// An Item is a tree of real software the suite measures: what a store item
// would hold. Older, if set, is the previous version of the same software,
// whose blocks a user upgrading already has.
type Item struct {
	Name  string
	Dir   string
	Older string // "" when there is no older version
	Note  string // where the tree came from, for the report
	// Small is a small file of the tree (relative path), read by the lazy
	// `ls -R` + one small file; SmallContent is its content.
	Small        string
	SmallContent []byte
	Files        int
	Bytes        int64
}

// The items the suite knows, in report order. Each names how it is made:
// the Go toolchain module (a GOROOT, as `go` itself downloads toolchains)
// with its previous patch release, a Go module with its previous release,
// a Debian package's contents (apt-get download + dpkg -x), or the
// generated tree of the lazy benchmark.
var knownItems = map[string]func(ctx context.Context, work string, s *itemSetup) (Item, error){
	"toolchain": func(ctx context.Context, work string, s *itemSetup) (Item, error) {
		return s.goModule(ctx, "golang.org/toolchain", "v0.0.1-go1.26.8.linux-amd64", "v0.0.1-go1.26.7.linux-amd64",
			"the Go toolchain go1.26.8 (GOROOT from golang.org/toolchain; upgrade from go1.26.7)")
	},
	"protobuf": func(ctx context.Context, work string, s *itemSetup) (Item, error) {
		return s.goModule(ctx, "google.golang.org/protobuf", "v1.36.11", "v1.36.10",
			"the Go module google.golang.org/protobuf v1.36.11 (upgrade from v1.36.10)")
	},
	"coreutils":         debItem("coreutils"),
	"libc6":             debItem("libc6"),
	"perl-modules-5.36": debItem("perl-modules-5.36"),
	"generated": func(ctx context.Context, work string, s *itemSetup) (Item, error) {
		t, err := GenerateTree(ctx, filepath.Join(work, "generated"), s.genFiles, s.genBytes, 1, s.goBin)
		if err != nil {
			return Item{}, err
		}
		older, err := GenerateTree(ctx, filepath.Join(work, "generated-older"), s.genFiles, s.genBytes, 1, s.goBin)
		if err != nil {
			return Item{}, err
		}
		// The older version differs in its large files only.
		for i := 0; ; i++ {
			p := filepath.Join(older.Dir, "lib", fmt.Sprintf("libbig%d.so", i))
			if _, err := os.Stat(p); err != nil {
				break
			}
			if err := os.WriteFile(p, []byte(fmt.Sprintf("older libbig%d\n", i)), 0o644); err != nil {
				return Item{}, err
			}
		}
		return Item{Name: "generated", Dir: t.Dir, Older: older.Dir, Small: t.Small, SmallContent: t.SmallContent,
			Note: fmt.Sprintf("the generated tree (%d files of random content; upgrade: its large files changed)", t.Files)}, nil
	},
}

// itemOrder is the report's order.
var itemOrder = []string{"toolchain", "protobuf", "coreutils", "libc6", "perl-modules-5.36", "generated"}

// itemSetup makes items in a work directory.
type itemSetup struct {
	work     string
	goBin    string
	genFiles int
	genBytes int64
}

// goModule downloads two versions of a Go module with the go command (the
// module proxy, or the module cache when they are there) and returns the
// newer as the item, the older as its upgrade base.
func (s *itemSetup) goModule(ctx context.Context, path, version, older, note string) (Item, error) {
	dirs := make([]string, 2)
	for i, v := range []string{version, older} {
		cmd := exec.CommandContext(ctx, s.goBin, "mod", "download", "-json", path+"@"+v)
		cmd.Dir = s.work // no go.mod here: the download is on its own
		cmd.Env = append(withoutEnv(os.Environ(), "GOFLAGS"), "GOFLAGS=-mod=mod")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return Item{}, fmt.Errorf("go mod download %s@%s: %v: %s %s", path, v, err, stderr.Bytes(), out)
		}
		var m struct{ Dir, Error string }
		if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
			return Item{}, fmt.Errorf("go mod download %s@%s: %s (%v)", path, v, out, err)
		}
		dirs[i] = m.Dir
	}
	name := path[strings.LastIndexByte(path, '/')+1:]
	if path == "golang.org/toolchain" {
		name = "toolchain"
	}
	return Item{Name: name, Dir: dirs[0], Older: dirs[1], Note: note}, nil
}

// debItem makes an item of a Debian package's contents, as apt-get
// download and dpkg -x give them.
func debItem(pkg string) func(ctx context.Context, work string, s *itemSetup) (Item, error) {
	return func(ctx context.Context, work string, s *itemSetup) (Item, error) {
		debs := filepath.Join(work, "debs")
		if err := os.MkdirAll(debs, 0o755); err != nil {
			return Item{}, err
		}
		cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
		cmd.Dir = debs
		if out, err := cmd.CombinedOutput(); err != nil {
			return Item{}, fmt.Errorf("apt-get download %s: %v: %s", pkg, err, out)
		}
		matches, _ := filepath.Glob(filepath.Join(debs, pkg+"_*.deb"))
		if len(matches) != 1 {
			return Item{}, fmt.Errorf("apt-get download %s: want one .deb, found %q", pkg, matches)
		}
		dir := filepath.Join(work, "deb-"+pkg)
		if out, err := exec.CommandContext(ctx, "dpkg", "-x", matches[0], dir).CombinedOutput(); err != nil {
			return Item{}, fmt.Errorf("dpkg -x %s: %v: %s", matches[0], err, out)
		}
		return Item{Name: pkg, Dir: dir, Note: "the Debian package " + filepath.Base(matches[0]) + " (dpkg -x)"}, nil
	}
}

// SetupItems makes the items named, in the report's order, each with a
// small file chosen and its size counted.
func SetupItems(ctx context.Context, work string, names []string, s *itemSetup) ([]Item, error) {
	s.work = work
	var items []Item
	for _, name := range itemOrder {
		if !contains(names, name) {
			continue
		}
		it, err := knownItems[name](ctx, work, s)
		if err != nil {
			return nil, fmt.Errorf("item %s: %w", name, err)
		}
		if err := it.survey(); err != nil {
			return nil, fmt.Errorf("item %s: %w", name, err)
		}
		items = append(items, it)
	}
	for _, n := range names {
		if knownItems[n] == nil {
			return nil, fmt.Errorf("unknown item %q (known: %s)", n, strings.Join(itemOrder, ", "))
		}
	}
	return items, nil
}

// survey counts the tree and picks its small file, unless it has one: the
// first regular file in walk order of 200 B to 4 KiB.
func (it *Item) survey() error {
	it.Files, it.Bytes = 0, 0
	err := filepath.WalkDir(it.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		it.Files++
		it.Bytes += fi.Size()
		if it.Small == "" && fi.Size() >= 200 && fi.Size() <= 4096 {
			it.Small, _ = filepath.Rel(it.Dir, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if it.Small == "" {
		return fmt.Errorf("no file of 200 B to 4 KiB in %s", it.Dir)
	}
	if it.SmallContent == nil {
		it.SmallContent, err = os.ReadFile(filepath.Join(it.Dir, it.Small))
	}
	return err
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
