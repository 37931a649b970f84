// Package fusefs mounts an erisfs.Tree as a read-only FUSE file system
// (github.com/hanwen/go-fuse/v2, its fs node API): directories, regular files
// (0444), executables (0555) and symlinks, with the tree's stable entry
// numbers as inode numbers. File contents are read lazily through the block
// getter the tree was opened with (in erismount: memory → SQLite → peers),
// so only the blocks that are read are ever fetched.
//
// What it adds on top of the tree:
//   - The kernel does most of the work: the content never changes, so
//     entries, attributes and symlinks are cached for a long time and
//     file pages are kept across opens (FOPEN_KEEP_CACHE).
//   - Its own readahead, in ERIS tree order within a file: a sequential
//     reader finds the next chunks already fetched and decrypted. It is
//     bounded in memory and in fetches in flight, and a demand read never
//     waits for a slot.
//   - Readahead across files (tree-ahead): once a reader opens files one
//     after another in the tree's order, as tar or cp -r do, the files
//     that follow are fetched into the block cache, many at once, as
//     background requests; an executable is fetched whole when opened,
//     since running it faults in most of its pages (Options.TreeAhead).
//   - It never hangs: every operation that needs blocks has a deadline
//     (Options.Deadline). Past it the call fails with EIO, the cause
//     (usually a missing block) is logged once, and the mount stays
//     usable. Even a block source that ignores its context cannot hold a
//     caller longer than the deadline and a short grace period.
//   - Status as extended attributes: user.eris.urn (the capability of a
//     file, or of the whole tree on the root) and user.eris.local (how
//     many of the blocks are held locally: "1.0000 48/48" means it will
//     work offline).
//
// MountStore mounts a store view instead (store.go): a directory standing
// for a whole Nix or Guix store, in which each `<hash>-<name>` looked up is
// the ERIS-FS tree named by that item's verified narinfo, with the same
// nodes; items are built on lookup and dropped when the kernel forgets
// them, at most StoreOptions.MaxItems at once.
//
// It does not fetch, cache or verify blocks itself: the eris reader
// verifies every block, and packages cache and fetcher provide them.
//
// A process that serves a mount must not exec a file of that mount
// directly: the forked child opens the file between fork and exec while it
// holds the parent's scheduler slot, which can deadlock the parent's own
// FUSE server (golang/go#11155). Run it through /bin/sh, or serve the mount
// from another process (erismount mount).
//
//	tree, err := erisfs.Open(ctx, rc, store, erisfs.OpenOptions{})
//	srv, err := fusefs.Mount(ctx, "/mnt/x", tree, fusefs.Options{Deadline: 5 * time.Second})
//	defer srv.Close()
package fusefs
