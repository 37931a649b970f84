package erisfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"testing"
	"testing/fstest"

	"erismount/eris/eristest"
)

// TestFSTestFS runs the standard library's file system checker on the io/fs
// view of generated trees (symlinks resolving inside the tree, since
// TestFS opens every symlink).
func TestFSTestFS(t *testing.T) {
	ctx := t.Context()
	for seed := range 4 {
		r := rand.New(rand.NewPCG(uint64(seed), 99))
		s := genSpec(r, 40, 8, true)
		store := eristest.NewStore()
		_, _, tree := roundTrip(t, ctx, s.writeDir(t), store)
		if err := fstest.TestFS(tree.FS(ctx), s.paths()...); err != nil {
			t.Errorf("seed %d: %v\ntree:\n%s", seed, err, describe(s))
		}
	}
}

func TestFSSymlinks(t *testing.T) {
	ctx := t.Context()
	s := spec{
		"dir/file":      reg("content"),
		"dir/exe":       exe("#!/bin/sh"),
		"rel":           link("dir/file"),
		"dir/up":        link("../rel"),
		"todir":         link("dir"),
		"todir2":        link("./todir/"),
		"abs":           link("/etc/passwd"),
		"escape":        link("../outside"),
		"dir/escape2":   link("../../x"),
		"dangling":      link("nope"),
		"loop1":         link("loop2"),
		"loop2":         link("loop1"),
		"dir/self-loop": link("self-loop"),
	}
	_, _, tree := roundTrip(t, ctx, s.writeDir(t), eristest.NewStore())
	view := tree.FS(ctx)
	cases := []struct {
		name    string
		content string // "" when an error is expected
		err     error
	}{
		{"rel", "content", nil},
		{"dir/up", "content", nil},
		{"todir/file", "content", nil},
		{"todir2/file", "content", nil},
		{"todir2/up", "content", nil},
		{"abs", "", ErrOutsideTree},
		{"escape", "", ErrOutsideTree},
		{"dir/escape2", "", ErrOutsideTree},
		{"dangling", "", fs.ErrNotExist},
		{"loop1", "", nil},
		{"dir/self-loop", "", nil},
		{"dir/file/x", "", fs.ErrNotExist},
		{"missing", "", fs.ErrNotExist},
		{"/dir/file", "", fs.ErrInvalid},
		{"dir/../rel", "", fs.ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := fs.ReadFile(view, tc.name)
			if tc.content != "" {
				if err != nil || string(b) != tc.content {
					t.Fatalf("ReadFile = %q, %v; want %q", b, err, tc.content)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadFile = %q, want an error", b)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
		})
	}
	// Lstat and ReadLink do not follow; Stat does.
	li, err := fs.Lstat(view, "todir")
	if err != nil || li.Mode() != fs.ModeSymlink|0o777 || li.Size() != 3 {
		t.Errorf("Lstat(todir) = %v, %v", li, err)
	}
	si, err := fs.Stat(view, "todir")
	if err != nil || !si.IsDir() || si.Mode() != fs.ModeDir|0o555 || si.Name() != "dir" {
		t.Errorf("Stat(todir) = %v, %v", si, err)
	}
	if target, err := fs.ReadLink(view, "dir/up"); err != nil || target != "../rel" {
		t.Errorf("ReadLink(dir/up) = %q, %v", target, err)
	}
	if _, err := fs.ReadLink(view, "dir/file"); err == nil {
		t.Error("ReadLink of a file succeeded")
	}
	if list, err := fs.ReadDir(view, "todir"); err != nil || len(list) != 5 {
		t.Errorf("ReadDir(todir) = %v, %v", list, err)
	}
	ei, err := fs.Stat(view, "dir/exe")
	if err != nil || ei.Mode() != 0o555 {
		t.Errorf("Stat(dir/exe) = %v, %v", ei, err)
	}
	if ei.Sys().(*Entry).Kind() != Executable {
		t.Errorf("Sys() = %v", ei.Sys())
	}
}

func TestFSFile(t *testing.T) {
	ctx := t.Context()
	content := randContent(rand.New(rand.NewPCG(1, 2)), 100_000)
	_, _, tree := roundTrip(t, ctx, spec{"f": regBytes(content)}.writeDir(t), eristest.NewStore())
	f, err := tree.FS(ctx).Open("f")
	if err != nil {
		t.Fatal(err)
	}
	ra := f.(io.ReaderAt)
	buf := make([]byte, 5000)
	if n, err := ra.ReadAt(buf, 40_000); n != len(buf) || err != nil || !bytes.Equal(buf, content[40_000:45_000]) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if off, err := f.(io.Seeker).Seek(-10, io.SeekEnd); err != nil || off != int64(len(content)-10) {
		t.Fatalf("Seek = %d, %v", off, err)
	}
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(rest, content[len(content)-10:]) {
		t.Fatalf("ReadAll after Seek = %q, %v", rest, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(buf); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if err := f.Close(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}
