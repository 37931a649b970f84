package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// An Op is what a user does with the tree once it is there, at dir: on
// the unpacked nar or on the mount. It checks what it reads.
type Op struct {
	Key  string // short name, for -ops and the goals
	Name string // as the table shows it
	Run  func(ctx context.Context, dir string, t *Tree) error
}

// Keys of the operations the goals of issue 10 are about.
const (
	opLsSmall  = "ls+small"
	opReadAll  = "read-all"
	opReadAllN = "read-all-n"
)

// Ops are the operations measured, in table order. readers is the number
// of concurrent readers of the last one.
func Ops(readers int) []Op {
	return []Op{
		{"ready", "ready (nar: fetch + unpack; lazy: mount)", func(context.Context, string, *Tree) error { return nil }},
		{"first-byte", "first byte of a large file", firstByte},
		{"ls", "`ls -R`", lsR},
		{"small", "read one small file", readSmall},
		{opLsSmall, "`ls -R` + read one small file", func(ctx context.Context, dir string, t *Tree) error {
			if err := lsR(ctx, dir, t); err != nil {
				return err
			}
			return readSmall(ctx, dir, t)
		}},
		{"run", "run one program", runProgram},
		{opReadAll, "read everything (1 reader, like `tar`)", func(ctx context.Context, dir string, t *Tree) error {
			return readAll(ctx, dir, t, 1)
		}},
		{opReadAllN, fmt.Sprintf("read everything (%d readers)", readers), func(ctx context.Context, dir string, t *Tree) error {
			return readAll(ctx, dir, t, readers)
		}},
	}
}

func firstByte(ctx context.Context, dir string, t *Tree) error {
	f, err := os.Open(filepath.Join(dir, t.Large))
	if err != nil {
		return err
	}
	defer f.Close()
	var b [1]byte
	_, err = io.ReadFull(f, b[:])
	return err
}

func lsR(ctx context.Context, dir string, t *Tree) error {
	cmd := exec.CommandContext(ctx, "ls", "-R", dir)
	var stderr bytes.Buffer
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ls -R: %v: %s", err, stderr.Bytes())
	}
	return nil
}

func readSmall(ctx context.Context, dir string, t *Tree) error {
	b, err := os.ReadFile(filepath.Join(dir, t.Small))
	if err != nil {
		return err
	}
	if !bytes.Equal(b, t.SmallContent) {
		return fmt.Errorf("%s: read %d bytes unlike the %d published", t.Small, len(b), len(t.SmallContent))
	}
	return nil
}

// runProgram runs the tree's program through sh, which execs it: this
// process serves the blocks, and a Go process must never exec a file
// whose loading waits on itself. Go's fork/exec runs clone with
// CLONE_VFORK as a raw syscall (golang/go#11155), so until the kernel has
// read the binary through FUSE — from erismount, from blocks this process
// serves — the calling thread looks to the runtime as if it were running
// Go code with signals blocked, and the next stop-the-world (a GC) waits
// for it: the server stops, the read hits erismount's deadline, and the
// exec fails with EIO. sh is a local binary; its child waits instead.
func runProgram(ctx context.Context, dir string, t *Tree) error {
	out, err := exec.CommandContext(ctx, "/bin/sh", "-c", `exec "$0"`, filepath.Join(dir, t.Program)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("run %s: %v: %s", t.Program, err, out)
	}
	if string(out) != t.ProgramOutput {
		return fmt.Errorf("%s printed %q, want %q", t.Program, out, t.ProgramOutput)
	}
	return nil
}

// readAll reads every file under dir to its end, readers at a time, in
// walk order, and checks that the byte and file counts are the tree's.
func readAll(ctx context.Context, dir string, t *Tree, readers int) error {
	paths := make(chan string, readers)
	var total, files atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(paths)
		return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			select {
			case paths <- p:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	})
	bufs := sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}
	for range readers {
		g.Go(func() error {
			for p := range paths {
				n, err := readFile(ctx, p, &bufs)
				if err != nil {
					return err
				}
				total.Add(n)
				files.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if total.Load() != t.Bytes || files.Load() != int64(t.Files) {
		return fmt.Errorf("read %d files, %d bytes; the tree has %d files, %d bytes", files.Load(), total.Load(), t.Files, t.Bytes)
	}
	return nil
}

// readFile reads the file p to its end, stopping early if ctx ends.
func readFile(ctx context.Context, p string, bufs *sync.Pool) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	var n int64
	for ctx.Err() == nil {
		m, err := f.Read(*bp)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, ctx.Err()
}
