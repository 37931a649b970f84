package tests

import (
	"context"
	"errors"
	"io"
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

	"erismount/narinfo/nar"
	"erismount/tests/testenv"
)

// copyTree copies the regular files, executables and symlinks under src
// into dst (directories come with their files; nothing else is copied).
func copyTree(b testing.TB, src, dst string) {
	b.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			os.MkdirAll(filepath.Dir(out), 0o755)
			return os.Symlink(target, out)
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			os.MkdirAll(filepath.Dir(out), 0o755)
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm()|0o200)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, in)
			return errors.Join(err, f.Close())
		}
		return nil
	})
	if err != nil {
		b.Fatalf("copy %s: %v", src, err)
	}
}

// serveDir serves a directory over HTTP on loopback (a plain binary cache
// as `nix copy --to file://` writes it) until the test ends.
func serveDir(b testing.TB, dir string) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// BenchmarkSubstituteNix is the whole substitute path against Nix's own:
// `nix-store -r` of a large store item (Go's src/cmd and the go and gofmt
// binaries: about 80 MB in about 4,400 files) through `erismount
// substitute-server` with an empty block cache, its blocks fetched from a
// CoAP peer on loopback (erismount-coap-cold), and through the same server
// once its cache holds every block (erismount-warm), against the same item
// from a plain binary cache written by `nix copy --to file://…` and served
// over HTTP, uncompressed (nix-copy-none) and xz-compressed (nix-copy-xz);
// erismount-coaptcp-cold fetches the blocks over CoAP/TCP instead of UDP,
// and erismount-coap-cold-nar-only is the server alone, its nar read by a Go
// client. median-s is the median of the iterations (the machine is shared).
// Every variant requires signatures. The time is nix-store's, from start to
// the registered path; MB/s are nar bytes.
//
//	go test ./tests -run XXX -bench SubstituteNix -benchtime 3x -timeout 1h
func BenchmarkSubstituteNix(b *testing.B) {
	testenv.RequireNix(b)
	goroot := "/usr/local/go"
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		goroot = strings.TrimSpace(string(out))
	}
	src := filepath.Join(b.TempDir(), "item")
	copyTree(b, filepath.Join(goroot, "src", "cmd"), filepath.Join(src, "src", "cmd"))
	copyTree(b, filepath.Join(goroot, "bin"), filepath.Join(src, "bin"))
	keys := b.TempDir()
	pubSec, pubFile, _ := nixKeys(b, keys, "publisher-1")
	serverSec, _, serverKey := nixKeys(b, keys, "loopback-1")
	pub, _ := os.ReadFile(pubFile)
	item := testenv.NixImport(b, src, "erismount-bench-go-cmd", nil)
	narSize := func() int64 {
		hw := nar.NewHashingWriter(nil)
		if err := nar.WriteFS(context.Background(), hw, nar.DirFS(item)); err != nil {
			b.Fatal(err)
		}
		return hw.Sum().Size
	}()

	// Blocks go up over CoAP/TCP (whole 32 KiB blocks per message) and come
	// down over CoAP/UDP, block-wise, as a substitute server on a LAN would
	// fetch them.
	peer := servePutPeer(b, "coap")
	narinfoDir := b.TempDir()
	start := time.Now()
	tcpURL := peer.listen(b, "coap+tcp")
	out := erismount(b, "publish", "--peer", tcpURL, "--nix-key", pubSec, "--narinfo-dir", narinfoDir, item)
	if !strings.Contains(out, "urn:eris:") {
		b.Fatalf("published without ERIS: %s", out)
	}
	b.Logf("item %s: nar %d bytes; published to %s in %v", item, narSize, peer.URL, time.Since(start))
	caches := map[string]string{}
	for _, comp := range []string{"none", "xz"} {
		dir := b.TempDir()
		start := time.Now()
		if _, err := testenv.Nix(b, "nix", "--extra-experimental-features", "nix-command", "copy", "--to",
			"file://"+dir+"?compression="+comp+"&secret-key="+serverSec, item); err != nil {
			b.Fatal(err)
		}
		caches[comp] = serveDir(b, dir)
		b.Logf("nix copy --to file://…?compression=%s in %v", comp, time.Since(start))
	}
	if _, err := testenv.Nix(b, "nix-store", "--delete", item); err != nil {
		b.Fatal(err)
	}

	// fetch gets the item from url once, timed: nix-store -r, with the
	// item absent from the store, or (narOnly) a Go client reading the nar.
	fetch := func(b *testing.B, url string, narOnly bool) time.Duration {
		b.Helper()
		var err error
		testenv.NixRemove(b, item)
		t0 := time.Now()
		b.StartTimer()
		if narOnly {
			var resp *http.Response
			if resp, err = http.Get(url + "/nar/" + filepath.Base(item)); err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		} else {
			err = substitute(b, url, serverKey.String(), item)
		}
		b.StopTimer()
		d := time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if !narOnly && !testenv.NixValid(b, item) {
			b.Fatalf("%s not valid after nix-store -r", item)
		}
		return d
	}
	server := func(b *testing.B, peerURL string) (string, *testenv.Process) {
		return startSubstituteServer(b, "--peer", peerURL, "--store-dir", "/nix/store", "--narinfo-dir", narinfoDir,
			"--nix-key", serverSec, "--trusted-nix-key", strings.TrimSpace(string(pub)))
	}
	stop := func(b *testing.B, p *testenv.Process) {
		p.Signal(syscall.SIGTERM)
		if code := p.Wait(30 * time.Second); code != 0 {
			b.Errorf("substitute-server: exit %d\n%s", code, p.Stderr())
		}
	}

	variants := []struct {
		name    string
		peer    string // erismount from this peer, through a new server with an empty cache each time
		warm    bool   // through one server, its cache filled first
		narOnly bool   // a Go client reads the nar: the server alone
		cache   string // a plain binary cache
	}{
		{name: "erismount-coap-cold", peer: peer.URL},
		{name: "erismount-coaptcp-cold", peer: tcpURL},
		{name: "erismount-coap-cold-nar-only", peer: peer.URL, narOnly: true},
		{name: "erismount-warm", peer: peer.URL, warm: true},
		{name: "nix-copy-none", cache: caches["none"]},
		{name: "nix-copy-xz", cache: caches["xz"]},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(narSize)
			b.StopTimer()
			url := v.cache
			var p *testenv.Process
			if v.warm {
				url, p = server(b, v.peer)
				fetch(b, url, false) // fills the cache
				defer stop(b, p)
			}
			var times []time.Duration
			for range b.N {
				if v.peer != "" && !v.warm {
					url, p = server(b, v.peer)
				}
				times = append(times, fetch(b, url, v.narOnly))
				if v.peer != "" && !v.warm {
					stop(b, p)
				}
			}
			slices.Sort(times)
			b.ReportMetric(times[len(times)/2].Seconds(), "median-s")
		})
	}
}
