package testenv

import (
	"context"
	"os"
	"testing"

	"erismount/erisfs"
	"erismount/fusefs"
)

// RequireFUSE skips the test when the kernel's FUSE device is absent.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("testenv: FUSE unavailable: %v", err)
	}
}

// Mount mounts tree in a new temporary directory and unmounts it when the
// test ends, whether it passed or not. A mount that cannot be unmounted
// (files left open) fails the test and is detached lazily, so that no
// test leaves a mount behind. Options without a Logger log to the test.
func Mount(t testing.TB, tree *erisfs.Tree, opts fusefs.Options) *fusefs.Server {
	t.Helper()
	return MountAt(t, t.TempDir(), tree, opts)
}

// MountAt is Mount at an existing directory dir.
func MountAt(t testing.TB, dir string, tree *erisfs.Tree, opts fusefs.Options) *fusefs.Server {
	t.Helper()
	RequireFUSE(t)
	if opts.Logger == nil {
		opts.Logger = Logger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := fusefs.Mount(ctx, dir, tree, opts)
	if err != nil {
		cancel()
		t.Fatalf("testenv: mount %s: %v", dir, err)
	}
	t.Cleanup(func() {
		defer cancel()
		if err := srv.Unmount(); err != nil {
			t.Errorf("testenv: %v; detaching", err)
			if err := fusefs.Detach(srv.Dir()); err != nil {
				t.Errorf("testenv: %v", err)
			}
		}
	})
	return srv
}
