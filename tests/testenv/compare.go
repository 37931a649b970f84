package testenv

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// CompareDirs walks the tree at src (the published source on disk) and the
// mounted tree at mnt and reports every difference: a path present on one
// side only, another type, a symlink target, a size, content that differs
// at some byte, or a mode other than what ERIS-FS keeps (directories 0555,
// executables 0555, other files 0444, from the owner's execute bit of the
// source). It reads every file completely, in 64 KiB pieces.
func CompareDirs(t testing.TB, src, mnt string) {
	t.Helper()
	seen := make(map[string]bool)
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		seen[rel] = true
		compareEntry(t, rel, path, filepath.Join(mnt, rel))
		return nil
	})
	if err != nil {
		t.Errorf("testenv: walk %s: %v", src, err)
	}
	err = filepath.WalkDir(mnt, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, path)
		if !seen[rel] {
			t.Errorf("%s: in the mount, not in the source", rel)
		}
		return nil
	})
	if err != nil {
		t.Errorf("testenv: walk %s: %v", mnt, err)
	}
}

func compareEntry(t testing.TB, rel, src, mnt string) {
	t.Helper()
	want, err := os.Lstat(src)
	if err != nil {
		t.Errorf("%s: %v", rel, err)
		return
	}
	got, err := os.Lstat(mnt)
	if err != nil {
		t.Errorf("%s: %v", rel, err)
		return
	}
	if want.Mode().Type() != got.Mode().Type() {
		t.Errorf("%s: type %v in the mount, %v in the source", rel, got.Mode().Type(), want.Mode().Type())
		return
	}
	switch {
	case want.Mode()&fs.ModeSymlink != 0:
		wt, _ := os.Readlink(src)
		gt, err := os.Readlink(mnt)
		if err != nil || gt != wt {
			t.Errorf("%s: symlink to %q (%v), want %q", rel, gt, err, wt)
		}
		if got.Size() != int64(len(wt)) {
			t.Errorf("%s: symlink size %d, want %d", rel, got.Size(), len(wt))
		}
		return
	case want.IsDir():
		if got.Mode().Perm() != 0o555 {
			t.Errorf("%s: directory mode %v, want 0555", rel, got.Mode().Perm())
		}
		return
	}
	wantPerm := fs.FileMode(0o444)
	if want.Mode().Perm()&0o100 != 0 {
		wantPerm = 0o555
	}
	if got.Mode().Perm() != wantPerm {
		t.Errorf("%s: mode %v, want %v", rel, got.Mode().Perm(), wantPerm)
	}
	if got.Size() != want.Size() {
		t.Errorf("%s: size %d, want %d", rel, got.Size(), want.Size())
		return
	}
	if off, err := sameContent(src, mnt); err != nil {
		t.Errorf("%s: %v", rel, err)
	} else if off >= 0 {
		t.Errorf("%s: content differs at byte %d", rel, off)
	}
}

// sameContent returns the offset of the first differing byte of two files,
// or -1 if they are equal.
func sameContent(a, b string) (int64, error) {
	fa, err := os.Open(a)
	if err != nil {
		return 0, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return 0, err
	}
	defer fb.Close()
	ba := make([]byte, 64<<10)
	bb := make([]byte, 64<<10)
	var off int64
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if erra != nil && erra != io.EOF && erra != io.ErrUnexpectedEOF {
			return 0, erra
		}
		if errb != nil && errb != io.EOF && errb != io.ErrUnexpectedEOF {
			return 0, errb
		}
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			for i := range min(na, nb) {
				if ba[i] != bb[i] {
					return off + int64(i), nil
				}
			}
			return off + int64(min(na, nb)), nil
		}
		if na < len(ba) {
			return -1, nil
		}
		off += int64(na)
	}
}
