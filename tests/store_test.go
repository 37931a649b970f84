package tests

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"erismount/eris"
	"erismount/erisfs"
	"erismount/fetcher"
	"erismount/fusefs"
	"erismount/narinfo"
	"erismount/tests/testenv"
)

// closureExpr is a closure of three store items built by Debian's nix-bin
// without nixpkgs: top's program calls lib's by its store path, which
// reads data's greeting by its store path; each item carries megabytes the
// program never reads. nonce makes the items this test's own.
const closureExpr = `{ nonce }:
let
  mk = name: script: derivation {
    inherit name nonce; system = "x86_64-linux"; builder = "/bin/sh";
    args = [ "-c" script ]; PATH = "/usr/bin:/bin";
  };
  data = mk "erismount-store-data" ''
    mkdir -p $out/share/data
    echo "greetings from the data item" > $out/share/greeting
    for i in 1 2 3 4 5 6; do head -c 1000000 /dev/urandom > $out/share/data/blob$i; done
  '';
  lib = mk "erismount-store-lib" ''
    mkdir -p $out/bin $out/share
    head -c 2000000 /dev/urandom > $out/share/unused
    printf '#!/bin/sh\necho "lib: $(cat ${data}/share/greeting)"\n' > $out/bin/greet
    chmod +x $out/bin/greet
  '';
in mk "erismount-store-top" ''
  mkdir -p $out/bin
  printf '#!/bin/sh\nread line\necho "top: read $line"\n${lib}/bin/greet || exit 9\necho "top: args $*"\nexit $1\n' > $out/bin/prog
  chmod +x $out/bin/prog
''
`

// nixClosure builds closureExpr and returns the store paths of top, lib
// and data. They are deleted when the test ends.
func nixClosure(t *testing.T) (top, lib, data string) {
	t.Helper()
	testenv.RequireNix(t)
	dir := t.TempDir()
	expr := filepath.Join(dir, "closure.nix")
	if err := os.WriteFile(expr, []byte(closureExpr), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := testenv.Nix(t, "nix-build", "--option", "sandbox", "false", "--option", "build-users-group", "",
		"--no-out-link", "--argstr", "nonce", testenv.NixHashPart(t), expr)
	if err != nil {
		t.Fatal(err)
	}
	top = strings.TrimSpace(out)
	t.Cleanup(func() { testenv.NixRemove(t, top) })
	refs, err := testenv.Nix(t, "nix-store", "--query", "--requisites", top)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(refs) {
		switch {
		case strings.HasSuffix(p, "-erismount-store-lib"):
			lib = p
		case strings.HasSuffix(p, "-erismount-store-data"):
			data = p
		}
	}
	if lib == "" || data == "" {
		t.Fatalf("closure of %s: %q, want lib and data", top, refs)
	}
	drvs, _ := testenv.Nix(t, "nix-store", "--query", "--deriver", top, lib, data)
	t.Cleanup(func() {
		// The outputs, then the derivations nix-build left in the store
		// (an output keeps its derivation alive), all at once (top's
		// refers to the others').
		for _, p := range []string{top, lib, data} {
			testenv.NixRemove(t, p)
		}
		if d := strings.Fields(drvs); len(d) > 0 {
			if _, err := testenv.Nix(t, "nix-store", append([]string{"--delete"}, d...)...); err != nil {
				t.Logf("derivations left in the store: %v", err)
			}
		}
	})
	return top, lib, data
}

// countingPeer serves p's blocks over CoAP (UDP) counting every block it
// serves.
func countingPeer(t *testing.T, g eris.BlockGetter) (string, *testenv.Counting) {
	t.Helper()
	count := testenv.NewCounting(g)
	srv := fetcher.NewServer(count, fetcher.ServerOptions{Logger: testenv.Logger(t)})
	url, err := srv.Listen(context.Background(), "coap://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return url, count
}

// runErismount runs erismount with stdin and returns its output and exit
// code.
func runErismount(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(testenv.Erismount(t), args...)
	cmd.Env = testenv.Env(t)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		<-ctx.Done()
		if cmd.Process != nil && ctx.Err() == context.DeadlineExceeded {
			cmd.Process.Kill()
		}
	}()
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run erismount: %v", err)
	}
	return o.String(), e.String(), code
}

// itemRefs returns the references of the blocks of the item's index and
// of the files named.
func itemRefs(t *testing.T, g eris.BlockGetter, rc eris.ReadCapability, files ...string) map[eris.Ref]bool {
	t.Helper()
	ctx := context.Background()
	refs, err := testenv.ContentRefs(ctx, rc, g)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := erisfs.Open(ctx, rc, g, erisfs.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		e, err := tree.Lookup(f)
		if err != nil {
			t.Fatalf("%s: %v", rc, err)
		}
		r, err := testenv.ContentRefs(ctx, e.Capability(), g)
		if err != nil {
			t.Fatal(err)
		}
		for ref := range r {
			refs[ref] = true
		}
	}
	return refs
}

// readNarinfo reads the narinfo of storePath from dir.
func readNarinfo(t *testing.T, dir, storePath string) *narinfo.Narinfo {
	t.Helper()
	_, base, err := narinfo.SplitStorePath(storePath)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, base[:32]+".narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := narinfo.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStoreRunNix: a closure of three items built with nix-bin, published
// with a Nix key to a CoAP peer and deleted from the store, is seen in
// `erismount store` (listing, files, xattrs, status) and run with
// `erismount run` from an empty cache: the program reads its stdin, calls
// the others by their store paths, and its output and exit status pass
// through, while the peer serves only the blocks of the items' indexes and
// of the three files the program touched. Untrusted narinfos, narinfos
// without ERIS and tampered blocks never show as items or as bytes.
func TestStoreRunNix(t *testing.T) {
	testenv.RequireFUSE(t)
	top, lib, data := nixClosure(t)
	keys := t.TempDir()
	sec, _, pub := nixKeys(t, keys, "publisher-1")
	otherSec, _, _ := nixKeys(t, keys, "someone-else")
	peer := servePutPeer(t, "coap")
	narinfoDir := t.TempDir()
	erismount(t, "publish", "--peer", peer.URL, "--nix-key", sec, "--narinfo-dir", narinfoDir, top, lib, data)
	if _, err := testenv.Nix(t, "nix-store", "--delete", top, lib, data); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{top, lib, data} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s still in the store: %v", p, err)
		}
	}

	// An untrusted item (another key) and one without ERIS (trusted).
	untrusted := "/nix/store/" + testenv.NixHashPart(t) + "-erismount-store-untrusted"
	erismount(t, "publish", "--peer", peer.URL, "--nix-key", otherSec, "--narinfo-dir", narinfoDir,
		"--store-path", untrusted, "--references", "none", testenv.Spec{"f": testenv.File("x\n")}.WriteDir(t))
	noERIS := "/nix/store/" + testenv.NixHashPart(t) + "-erismount-store-no-eris"
	{
		n := readNarinfo(t, narinfoDir, data)
		plain := &narinfo.Narinfo{StorePath: noERIS, NarHash: n.NarHash, NarSize: n.NarSize}
		k, err := os.ReadFile(sec)
		if err != nil {
			t.Fatal(err)
		}
		key, err := narinfo.ParseNixPrivateKey(string(k))
		if err != nil {
			t.Fatal(err)
		}
		if err := plain.SignNix(key); err != nil {
			t.Fatal(err)
		}
		raw, err := plain.Marshal(narinfo.Classic)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(narinfoDir, filepath.Base(noERIS)[:32]+".narinfo"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	url, count := countingPeer(t, peer)
	trust := []string{"--narinfo-dir", narinfoDir, "--trusted-nix-key", pub.String(), "--peer", url}

	t.Run("store", func(t *testing.T) {
		mnt := t.TempDir()
		cache := filepath.Join(t.TempDir(), "cache.sqlite")
		p := testenv.Start(t, append([]string{"store", mnt, "-v", "--store", cache, "--store-dir", "/nix/store"}, trust...)...)
		testenv.WaitMounted(t, p, mnt, 30*time.Second)
		defer p.Interrupt(t, mnt)

		names := readNames(t, mnt)
		want := map[string]bool{filepath.Base(top): true, filepath.Base(lib): true, filepath.Base(data): true}
		if len(names) != len(want) {
			t.Errorf("ls of the store view: %q, want the three items", names)
		}
		for _, n := range names {
			if !want[n] {
				t.Errorf("ls of the store view shows %s", n)
			}
		}
		ents, err := os.ReadDir(filepath.Join(mnt, filepath.Base(data), "share/data"))
		if err != nil || len(ents) != 6 {
			t.Errorf("ls of data/share/data: %d entries, %v; want 6", len(ents), err)
		}
		b, err := os.ReadFile(filepath.Join(mnt, filepath.Base(data), "share/greeting"))
		if err != nil || string(b) != "greetings from the data item\n" {
			t.Errorf("cat greeting: %q, %v", b, err)
		}
		// The item's capability is the narinfo's, and status works on it.
		buf := make([]byte, 512)
		n, err := syscall.Getxattr(filepath.Join(mnt, filepath.Base(data)), fusefs.XattrURN, buf)
		if urn := readNarinfo(t, narinfoDir, data).ERIS.URN(); err != nil || string(buf[:n]) != urn {
			t.Errorf("%s of the data item: %q, %v; want %s", fusefs.XattrURN, buf[:n], err, urn)
		}
		out, stderr, code := testenv.Run(t, "status", "--json", "--depth", "2", "--store", cache, "--peer", url, string(buf[:n]))
		if code != 0 || !strings.Contains(out, `"path": "share/greeting"`) {
			t.Errorf("status of the data item: exit %d\n%s%s", code, out, stderr)
		}
		for _, name := range []string{filepath.Base(untrusted), filepath.Base(noERIS), testenv.NixHashPart(t) + "-unknown"} {
			if _, err := os.Stat(filepath.Join(mnt, name)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("stat %s: %v, want ENOENT", name, err)
			}
		}
		for _, reason := range []string{"not trusted", "narinfo has no ERIS field"} {
			if !strings.Contains(p.Stderr(), reason) {
				t.Errorf("the -v log does not say %q:\n%s", reason, p.Stderr())
			}
		}
	})

	t.Run("run", func(t *testing.T) {
		count.Reset()
		cache := filepath.Join(t.TempDir(), "cache.sqlite")
		stdout, stderr, code := runErismount(t, "a line of input\n", append(append([]string{"run", "--store", cache}, trust...), top+"/bin/prog", "7", "eight")...)
		want := "top: read a line of input\nlib: greetings from the data item\ntop: args 7 eight\n"
		if stdout != want || code != 7 {
			t.Fatalf("run: exit %d, stdout %q, want 7 and %q\nstderr:\n%s", code, stdout, want, stderr)
		}
		if stderr != "" {
			t.Errorf("run wrote to stderr: %q", stderr)
		}
		// Only the indexes and the three files touched were fetched.
		allowed := itemRefs(t, peer, readNarinfo(t, narinfoDir, top).ERIS, "bin/prog")
		for r := range itemRefs(t, peer, readNarinfo(t, narinfoDir, lib).ERIS, "bin/greet") {
			allowed[r] = true
		}
		for r := range itemRefs(t, peer, readNarinfo(t, narinfoDir, data).ERIS, "share/greeting") {
			allowed[r] = true
		}
		for r := range count.Refs() {
			if !allowed[r] {
				t.Errorf("fetched block %s, of no file the program touched", r)
			}
		}
		t.Logf("run fetched %d blocks, %d bytes, of a closure of more than 8 MB", count.Blocks(), count.Bytes())
		if count.Bytes() > 1<<20 {
			t.Errorf("run fetched %d bytes", count.Bytes())
		}
		// Nothing is left mounted, nothing installed.
		if _, err := os.Lstat(top); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists after the run: %v", top, err)
		}
	})

	t.Run("upstream", func(t *testing.T) {
		// The narinfos from a substitute server over HTTP (a static
		// binary cache: the directory served as it is), no --narinfo-dir.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: http.FileServer(http.Dir(narinfoDir))}
		go hs.Serve(ln)
		defer hs.Close()
		upstream := []string{"--upstream", "http://" + ln.Addr().String(), "--trusted-nix-key", pub.String(), "--peer", url}
		cache := filepath.Join(t.TempDir(), "cache.sqlite")
		stdout, stderr, code := runErismount(t, "via http\n", append(append([]string{"run", "--store", cache}, upstream...), top+"/bin/prog", "0")...)
		if want := "top: read via http\nlib: greetings from the data item\ntop: args 0\n"; stdout != want || code != 0 {
			t.Fatalf("run with --upstream: exit %d, stdout %q, want %q\nstderr:\n%s", code, stdout, want, stderr)
		}
		// The untrusted item is not shown from an upstream either.
		mnt := t.TempDir()
		p := testenv.Start(t, append([]string{"store", mnt, "-v", "--store", cache, "--store-dir", "/nix/store"}, upstream...)...)
		testenv.WaitMounted(t, p, mnt, 30*time.Second)
		defer p.Interrupt(t, mnt)
		// What the run looked up is known locally now: a fresh view lists
		// it from the narinfo cache, before any lookup.
		ents, err := os.ReadDir(mnt)
		if err != nil {
			t.Fatal(err)
		}
		var listed []string
		for _, e := range ents {
			listed = append(listed, e.Name())
		}
		for _, want := range []string{top, data} {
			if !slices.Contains(listed, filepath.Base(want)) {
				t.Errorf("ls of the view through --upstream: %v, want %s listed from the narinfo cache", listed, filepath.Base(want))
			}
		}
		if _, err := os.Stat(filepath.Join(mnt, filepath.Base(untrusted))); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat of the untrusted item through --upstream: %v, want ENOENT", err)
		}
		if b, err := os.ReadFile(filepath.Join(mnt, filepath.Base(data), "share/greeting")); err != nil || string(b) != "greetings from the data item\n" {
			t.Errorf("cat greeting through --upstream: %q, %v", b, err)
		}
	})

	t.Run("tampered", func(t *testing.T) {
		n := readNarinfo(t, narinfoDir, data)
		tree, err := erisfs.Open(context.Background(), n.ERIS, peer, erisfs.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e, err := tree.Lookup("share/greeting")
		if err != nil {
			t.Fatal(err)
		}
		bad, err := testenv.ContentRefs(context.Background(), e.Capability(), peer)
		if err != nil {
			t.Fatal(err)
		}
		peer.corrupt(bad)
		defer peer.corrupt(nil)
		cache := filepath.Join(t.TempDir(), "cache.sqlite")
		stdout, stderr, code := runErismount(t, "x\n", append(append([]string{"run", "--deadline", "3s", "--store", cache}, trust...), top+"/bin/prog", "0")...)
		if strings.Contains(stdout, "greetings") || code != 0 && code != 9 {
			t.Errorf("run with a tampered greeting: exit %d, stdout %q", code, stdout)
		}
		if !strings.Contains(stderr, "Input/output error") {
			t.Errorf("run with a tampered greeting: stderr %q, want an I/O error", stderr)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"run"},
			append([]string{"run"}, trust...), // no program
			append(append([]string{"run"}, trust...), "/usr/bin/env"),                               // not in a store
			append(append([]string{"run", "--store-dir", "/gnu/store"}, trust...), top+"/bin/prog"), // another store
			{"run", "--narinfo-dir", narinfoDir, top + "/bin/prog"},                                 // no trust
			{"store", t.TempDir(), "--narinfo-dir", narinfoDir},                                     // no trust
			{"store", filepath.Join(t.TempDir(), "missing"), "--narinfo-dir", narinfoDir, "--trust-narinfo-dir"},
			{"store", t.TempDir(), "--trusted-nix-key", pub.String()},                          // no narinfos
			{"store", t.TempDir(), "--upstream", "http://127.0.0.1:1", "--trust-narinfo-dir"},  // upstream, no key
			{"store", t.TempDir(), "--upstream", "ftp://x", "--trusted-nix-key", pub.String()}, // not http
		} {
			if _, stderr, code := runErismount(t, "", args...); code != 2 {
				t.Errorf("erismount %s: exit %d, want 2\n%s", strings.Join(args, " "), code, stderr)
			}
		}
	})
}

// TestStoreRunGuix: the same for a Guix-style store, /gnu/store, from
// narinfos signed with Guix's key format (narinfo/testdata's test key,
// trusted through its ACL): a program calls another item by its path. The
// store directory does not exist on this machine: run makes it for the
// run and removes it afterwards.
func TestStoreRunGuix(t *testing.T) {
	testenv.RequireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("not root: run needs root here to make /gnu/store for the run")
	}
	sec, acl := "../narinfo/testdata/test-key.sec", "../narinfo/testdata/test.acl"
	peer := servePutPeer(t, "coap+tcp")
	narinfoDir := t.TempDir()
	tool := "/gnu/store/" + testenv.NixHashPart(t) + "-erismount-guix-tool-1.0"
	hello := "/gnu/store/" + testenv.NixHashPart(t) + "-erismount-guix-hello-1.0"
	erismount(t, "publish", "--peer", peer.URL, "--key", sec, "--narinfo-dir", narinfoDir, "--store-path", tool, "--references", "none",
		testenv.Spec{
			"bin/tool":      testenv.Exec("#!/bin/sh\necho \"tool: $(cat " + tool + "/share/word)\"\n"),
			"share/word":    testenv.File("verified\n"),
			"share/big.bin": testenv.Bytes(testenv.Random(3, 3<<20)),
		}.WriteDir(t))
	erismount(t, "publish", "--peer", peer.URL, "--key", sec, "--narinfo-dir", narinfoDir, "--store-path", hello, "--references", tool,
		testenv.Spec{"bin/hello": testenv.Exec("#!/bin/sh\necho hello from guix\nexec " + tool + "/bin/tool\n")}.WriteDir(t))
	url, count := countingPeer(t, peer)
	trust := []string{"--narinfo-dir", narinfoDir, "--acl", acl, "--peer", url}

	t.Run("store", func(t *testing.T) {
		mnt := t.TempDir()
		p := testenv.Start(t, append([]string{"store", mnt, "--store", filepath.Join(t.TempDir(), "cache.sqlite")}, trust...)...)
		testenv.WaitMounted(t, p, mnt, 30*time.Second)
		defer p.Interrupt(t, mnt)
		b, err := os.ReadFile(filepath.Join(mnt, filepath.Base(tool), "share/word"))
		if err != nil || string(b) != "verified\n" {
			t.Errorf("cat share/word: %q, %v", b, err)
		}
		if _, err := os.Stat(filepath.Join(mnt, filepath.Base(hello), "bin/hello")); err != nil {
			t.Errorf("stat bin/hello: %v", err)
		}
	})

	t.Run("untrusted", func(t *testing.T) {
		// An ACL of another key: the narinfos are not trusted.
		keys := t.TempDir()
		_, _, otherKey := guixKeys(t, keys, "other")
		otherACL := writeACL(t, filepath.Join(keys, "acl"), otherKey)
		mnt := t.TempDir()
		p := testenv.Start(t, "store", mnt, "--store", filepath.Join(t.TempDir(), "cache.sqlite"), "--narinfo-dir", narinfoDir, "--acl", otherACL, "--peer", url)
		testenv.WaitMounted(t, p, mnt, 30*time.Second)
		defer p.Interrupt(t, mnt)
		if _, err := os.Stat(filepath.Join(mnt, filepath.Base(tool))); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat of an item signed by a key outside the ACL: %v, want ENOENT", err)
		}
		if names := readNames(t, mnt); len(names) != 0 {
			t.Errorf("ls with an ACL of another key: %q, want nothing", names)
		}
	})

	t.Run("run", func(t *testing.T) {
		if _, err := os.Stat("/gnu"); err == nil {
			t.Skip("/gnu exists on this machine: the test wants to see run make /gnu/store and remove it")
		}
		count.Reset()
		stdout, stderr, code := runErismount(t, "", append(append([]string{"run", "--store", filepath.Join(t.TempDir(), "cache.sqlite")}, trust...), hello+"/bin/hello")...)
		if code != 0 || stdout != "hello from guix\ntool: verified\n" {
			t.Fatalf("run: exit %d, stdout %q\nstderr:\n%s", code, stdout, stderr)
		}
		if count.Bytes() > 1<<20 {
			t.Errorf("run fetched %d bytes: more than the files it touched", count.Bytes())
		}
		if _, err := os.Stat("/gnu"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("/gnu left behind after the run: %v", err)
		}
	})
}

// readNames lists dir without asking anything of its entries.
func readNames(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// overlayStore is a store directory of the test's own holding one item
// locally, and a published item whose program calls the local one and
// another published item by their store paths.
type overlayStore struct {
	root       string // world-readable directory of the fixture
	storeDir   string
	prog       string
	trust      []string
	count      *testenv.Counting
	localBytes int
}

func newOverlayStore(t *testing.T) *overlayStore {
	t.Helper()
	root, err := os.MkdirTemp("", "erismount-run-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	o := &overlayStore{root: root, storeDir: filepath.Join(root, "store")}
	local := o.storeDir + "/" + testenv.NixHashPart(t) + "-local-tool"
	if err := os.MkdirAll(local+"/bin", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(local+"/bin/tool", []byte("#!/bin/sh\necho local tool\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sec, _, pub := nixKeys(t, t.TempDir(), "publisher-1")
	peer := servePutPeer(t, "coap")
	narinfoDir := filepath.Join(root, "narinfo")
	if err := os.Mkdir(narinfoDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lib := o.storeDir + "/" + testenv.NixHashPart(t) + "-remote-lib"
	o.prog = o.storeDir + "/" + testenv.NixHashPart(t) + "-remote-prog/bin/prog"
	erismount(t, "publish", "--peer", peer.URL, "--nix-key", sec, "--narinfo-dir", narinfoDir, "--store-path", lib, "--references", "none",
		testenv.Spec{"share/msg": testenv.File("remote lib\n"), "share/big": testenv.Bytes(testenv.Random(5, 2<<20))}.WriteDir(t))
	erismount(t, "publish", "--peer", peer.URL, "--nix-key", sec, "--narinfo-dir", narinfoDir, "--store-path", filepath.Dir(filepath.Dir(o.prog)),
		"--references", lib+","+local,
		testenv.Spec{"bin/prog": testenv.Exec("#!/bin/sh\n" + local + "/bin/tool\ncat " + lib + "/share/msg\nls " + filepath.Dir(o.storeDir) + "/store | wc -l\n")}.WriteDir(t))
	// Readable by nobody (TestRunUnprivileged).
	filepath.WalkDir(narinfoDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	url, count := countingPeer(t, peer)
	o.count = count
	o.trust = []string{"--narinfo-dir", narinfoDir, "--trusted-nix-key", pub.String(), "--peer", url}
	return o
}

// want is what the program prints: the local tool, the remote lib's
// message, and the number of items the store directory shows in the run
// (the local one and the two the program and the view have looked up).
const overlayWant = "local tool\nremote lib\n3\n"

// TestRunOverlay: run lays the store view below a store directory that
// holds items: the local item is used as it is, the others come from the
// view; afterwards the store directory is as it was.
func TestRunOverlay(t *testing.T) {
	testenv.RequireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("not root: TestRunUnprivileged covers the unprivileged run")
	}
	o := newOverlayStore(t)
	stdout, stderr, code := runErismount(t, "", append(append([]string{"run", "--store", filepath.Join(t.TempDir(), "c.sqlite")}, o.trust...), o.prog)...)
	if code != 0 || stdout != overlayWant {
		t.Fatalf("run: exit %d, stdout %q, want %q\nstderr:\n%s", code, stdout, overlayWant, stderr)
	}
	if ents, err := os.ReadDir(o.storeDir); err != nil || len(ents) != 1 {
		t.Errorf("the store directory after the run: %d entries, %v; want the local item only", len(ents), err)
	}
	if fusefs.IsMountPoint(o.storeDir) {
		t.Errorf("%s still a mount point", o.storeDir)
	}
}

// TestRunUnprivileged: an ordinary user (nobody) runs a program through
// erismount run in a user namespace: FUSE and overlayfs mounted there, no
// root needed. The kernel must allow unprivileged user namespaces, and the
// user must be able to open /dev/fuse: where it is not world-writable (as
// it is on Debian with fuse3 installed), the test gives nobody a private
// copy of the device node in a mount namespace of its own.
func TestRunUnprivileged(t *testing.T) {
	testenv.RequireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("not root: the test needs root to become nobody")
	}
	for _, tool := range []string{"unshare", "setpriv", "mknod"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s (util-linux, coreutils): %v", tool, err)
		}
	}
	if out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "-Urm", "true").CombinedOutput(); err != nil {
		t.Skipf("unprivileged user namespaces are not allowed here: %v: %s", err, out)
	}
	o := newOverlayStore(t)
	bin := filepath.Join(o.root, "erismount")
	b, err := os.ReadFile(testenv.Erismount(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(o.root, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(o.root, "fuse")
	script := `mknod "$1" c 10 229 && chmod 666 "$1" && mount --bind "$1" /dev/fuse && shift && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"`
	args := append([]string{"-m", "--propagation", "private", "sh", "-c", script, "sh", dev, bin, "run", "--store", filepath.Join(home, "c.sqlite")}, o.trust...)
	cmd := exec.Command("unshare", append(args, o.prog)...)
	cmd.Env = append(testenv.Env(t), "HOME="+home, "XDG_CACHE_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stdout.String() != overlayWant {
		t.Fatalf("run as nobody: %v, stdout %q, want %q\nstderr:\n%s", err, stdout.String(), overlayWant, stderr.String())
	}
}
