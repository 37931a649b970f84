package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"erismount/tests/testenv"
)

// Tree is the generated tree the benchmark publishes: shaped like a store
// item (a program, many small files in many directories, some libraries,
// a few large files), with incompressible contents so that neither side
// gains from compression.
type Tree struct {
	Dir   string
	Files int   // regular files and executables
	Dirs  int   // directories, the root included
	Links int   // symlinks
	Bytes int64 // content bytes of the files

	// Paths relative to Dir of what the operations use.
	Small   string // a small file
	Large   string // a large file (time to first byte)
	Program string // an executable
	// SmallContent is Small's content; ProgramOutput what Program prints.
	SmallContent  []byte
	ProgramOutput string
}

// programSource is the program put into the tree as bin/hello.
const programSource = `package main

import "fmt"

func main() { fmt.Println("hello from the benchmark tree") }
`

// GenerateTree writes a tree of about files files and size bytes into dir
// (which must not exist), the same for the same seed. bin/hello is a
// static Go program built with the go command at goBin; without one it is
// a shell script.
func GenerateTree(ctx context.Context, dir string, files int, size int64, seed uint64, goBin string) (*Tree, error) {
	if files < 8 {
		return nil, fmt.Errorf("a tree of %d files: want at least 8", files)
	}
	t := &Tree{
		Dir:           dir,
		Small:         "share/doc/README",
		Program:       "bin/hello",
		ProgramOutput: "hello from the benchmark tree\n",
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	write := func(rel string, content []byte, mode fs.FileMode) error {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, content, mode); err != nil {
			return err
		}
		t.Files++
		t.Bytes += int64(len(content))
		return nil
	}

	if err := buildProgram(ctx, goBin, filepath.Join(dir, "bin", "hello")); err != nil {
		return nil, err
	}
	fi, err := os.Stat(filepath.Join(dir, "bin", "hello"))
	if err != nil {
		return nil, err
	}
	t.Files++
	t.Bytes += fi.Size()

	t.SmallContent = bytes.Repeat([]byte("erismount benchmark tree: a small file read on its own.\n"), 36)
	if err := write(t.Small, t.SmallContent, 0o644); err != nil {
		return nil, err
	}

	r := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	// logUniform draws from [lo, hi) evenly in log scale.
	logUniform := func(lo, hi float64) float64 {
		return math.Exp(math.Log(lo) + r.Float64()*(math.Log(hi)-math.Log(lo)))
	}
	left := size - t.Bytes
	n := files - t.Files

	// A few large files hold 30% of the bytes.
	large := int(min(max(size/(16<<20), 1), 6))
	// (A tree smaller than its program still gets files of every kind,
	// and so is larger than asked.)
	largeBytes := max(left*3/10, int64(large)<<18)
	for i := range large {
		rel := fmt.Sprintf("lib/libbig%d.so", i)
		if i == 0 {
			t.Large = rel
		}
		if err := write(rel, testenv.Random(seed+uint64(i)+1, int(largeBytes/int64(large))), 0o644); err != nil {
			return nil, err
		}
	}
	left -= largeBytes
	n -= large

	// 90% of the other files are small (64 B to 16 KiB), grouped 32 to a
	// directory under a few top-level ones, as docs, headers, locales and
	// modules are.
	tops := []string{"share/doc", "include", "share/locale", "lib/python3/site-packages", "share/man/man3"}
	small := n * 9 / 10
	for i := range small {
		g := i / 32
		rel := fmt.Sprintf("%s/pkg%03d/f%04d", tops[g%len(tops)], g, i)
		sz := int(logUniform(64, 16<<10))
		if err := write(rel, testenv.Random(seed+1000+uint64(i), sz), 0o644); err != nil {
			return nil, err
		}
		left -= int64(sz)
	}
	n -= small

	// The rest are libraries and data of 32 KiB to 2 MiB by weight,
	// scaled to fill the size.
	weights := make([]float64, n)
	var sum float64
	for i := range weights {
		weights[i] = logUniform(1, 64)
		sum += weights[i]
	}
	for i, w := range weights {
		sz := max(int64(w/sum*float64(left)), 1<<10)
		rel := fmt.Sprintf("lib/pkg%03d/lib%04d.so", i/16, i)
		mode := fs.FileMode(0o644)
		if i%8 == 0 {
			mode = 0o755
		}
		if err := write(rel, testenv.Random(seed+1_000_000+uint64(i), int(sz)), mode); err != nil {
			return nil, err
		}
	}

	for link, target := range map[string]string{"lib/libbig.so": "libbig0.so", "bin/hi": "hello", "doc": "share/doc"} {
		if err := os.Symlink(target, filepath.Join(dir, filepath.FromSlash(link))); err != nil {
			return nil, err
		}
		t.Links++
	}
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			t.Dirs++
		}
		return err
	})
	return t, err
}

// buildProgram builds programSource into out as a static binary, or
// writes a shell script printing the same when there is no go command.
func buildProgram(ctx context.Context, goBin, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if goBin == "" {
		return os.WriteFile(out, []byte("#!/bin/sh\necho hello from the benchmark tree\n"), 0o755)
	}
	src, err := os.MkdirTemp("", "erismount-bench-hello-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	if err := os.WriteFile(filepath.Join(src, "hello.go"), []byte(programSource), 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "hello.go")
	cmd.Dir = src
	cmd.Env = append(withoutEnv(os.Environ(), "GOFLAGS", "CGO_ENABLED"), "CGO_ENABLED=0", "GO111MODULE=on")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the tree's program: %v\n%s", err, b)
	}
	return os.Chmod(out, 0o755)
}

// withoutEnv returns env without the variables named.
func withoutEnv(env []string, names ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}
