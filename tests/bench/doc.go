// Command bench is erismount's public benchmark: lazy mounting against
// fetching the whole nar, on the same shaped link.
//
// It generates a tree shaped like a store item (by default 4000 files,
// 128 MiB, a static Go program among them), publishes it with ERIS-FS into
// a block server's SQLite store served over CoAP on loopback, and puts an
// in-process proxy in front of the server that adds a round-trip time and
// caps the bandwidth (UDP for coap://, TCP for coap+tcp:// and for the
// baseline). The baseline serves the same tree as a nar over HTTP through
// the same kind of proxy; fetching it means downloading it, checking its
// NarHash and unpacking it on disk, as a substitute costs today.
//
// For each operation — time to the first byte of a file, `ls -R`, reading
// one small file, running one program, reading everything — it measures
// the whole-nar path (fetch + unpack + operation), and the lazy path with
// the real erismount binary (`erismount mount URN DIR --peer … --store …
// --foreground=false`): cold (an empty block store, kernel caches
// dropped), warm (the blocks in SQLite, a fresh mount) and hot (the same
// mount again). It prints a markdown table of medians for the README, the
// goals of issue 10 (lazy `ls -R` + one small file at least 5× faster than
// the whole nar, a full read within 1.5× of it), the machine it ran on,
// and every sample.
//
//	go run ./tests/bench                      # the README table (root, FUSE)
//	go run ./tests/bench -rtt 50ms -rate 20   # another link
//	go run ./tests/bench -files 200 -size 8   # a quick look
//
// With -suite it measures whole store items of real software instead
// (issue 15): the Go toolchain (golang.org/toolchain go1.26.8, a GOROOT, with
// go1.26.7 as the version a user upgrades from), google.golang.org/protobuf
// v1.36.11 (from v1.36.10), Debian's coreutils, libc6 and perl-modules-5.36
// (apt-get download + dpkg -x) and the generated tree, each set up by the
// harness itself. Against the nar compressed with `zstd -19` and `xz -6`
// and uncompressed (fetch over HTTP, decompress, unpack, NarHash checked) on
// the same shaped link, it measures the lazy `ls -R` + one small file, the
// whole item through its ERIS-FS blocks and through ERIS-Nar (the zstd nar
// as ERIS content), and the upgrade (the older version's blocks cached),
// with the bytes the link carried beside every time. The lazy sample ends
// once the small file is read: the unmount after it is not timed, as the
// nar paths' deleting the tree they unpacked is not (the report gives its
// median time).
//
//	go run ./tests/bench -suite all -prep-cache /var/tmp/bench   # the README's second table
//	go run ./tests/bench -suite protobuf,coreutils -runs 3
//
// It needs /dev/fuse, and root to drop the kernel's caches between runs.
package main
