package main

import (
	"context"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"erismount/fetcher"
	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/tests/testenv"
)

// BenchmarkSubstituteUpstream is issue 14's figure: `nix-store -r` of a
// real tree (Go's src/cmd and bin, about 80 MB in 4,400 files) through
// `erismount substitute-server --upstream` with an empty block cache, the
// upstream (publish's static cache: zstd nars, ERIS, ERIS-Nar, on a plain
// file server) and the CoAP peer behind shaped links (20 ms RTT, 100
// Mbit/s each way), each nar source forced and the automatic choice,
// against `nix-store -r` straight from `nix copy` caches (zstd, xz) over
// the same link. link-MB is what crossed the shaped links, headers
// included. Run once:
//
//	go test ./tests/bench -run XXX -bench SubstituteUpstream -benchtime 1x -timeout 1h -v
func BenchmarkSubstituteUpstream(b *testing.B) {
	testenv.RequireNix(b)
	ctx := context.Background()
	goroot := strings.TrimSpace(func() string { out, _ := exec.Command("go", "env", "GOROOT").Output(); return string(out) }())
	src := filepath.Join(b.TempDir(), "item")
	for _, d := range []string{"src/cmd", "bin"} {
		os.MkdirAll(filepath.Dir(filepath.Join(src, d)), 0o755)
		if out, err := exec.Command("cp", "-r", filepath.Join(goroot, d), filepath.Join(src, d)).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v\n%s", err, out)
		}
	}
	keys := b.TempDir()
	pubSec, pubKey := benchNixKey(b, keys, "publisher-1")
	serverSec, serverKey := benchNixKey(b, keys, "loopback-1")
	item := testenv.NixImport(b, src, "erismount-bench-upstream", nil)
	hw := nar.NewHashingWriter(nil)
	if err := nar.WriteFS(ctx, hw, nar.DirFS(item)); err != nil {
		b.Fatal(err)
	}
	narSize := hw.Sum().Size

	peerStore := testenv.SQLite(b, filepath.Join(b.TempDir(), "peer.sqlite"))
	peerSrv := fetcher.NewServer(peerStore, fetcher.ServerOptions{AllowPut: true})
	b.Cleanup(func() { peerSrv.Close() })
	peerURL, err := peerSrv.Listen(ctx, "coap://127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tcpURL, err := peerSrv.Listen(ctx, "coap+tcp://127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	static := b.TempDir()
	t0 := time.Now()
	if _, stderr, code := testenv.Run(b, "publish", "--peer", tcpURL, "--nix-key", pubSec, "--narinfo-dir", static,
		"--nar-dir", filepath.Join(static, "nar"), "--compression", "zstd", "--eris-nar", item); code != 0 {
		b.Fatalf("publish: exit %d\n%s", code, stderr)
	}
	b.Logf("published %s (nar %d bytes) in %v", item, narSize, time.Since(t0))
	caches := map[string]string{}
	for _, comp := range []string{"zstd", "xz"} {
		dir := b.TempDir()
		if _, err := testenv.Nix(b, "nix", "--extra-experimental-features", "nix-command", "copy", "--to",
			"file://"+dir+"?compression="+comp+"&secret-key="+serverSec, item); err != nil {
			b.Fatal(err)
		}
		caches[comp] = benchServeDir(b, dir)
	}
	if _, err := testenv.Nix(b, "nix-store", "--delete", item); err != nil {
		b.Fatal(err)
	}
	filepath.WalkDir(static, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, "/nar/") {
			if fi, err := os.Stat(p); err == nil {
				b.Logf("static cache nar %s: %d bytes", filepath.Base(p), fi.Size())
			}
		}
		return nil
	})

	sh := Shape{RTT: 20 * time.Millisecond, Rate: 100e6}
	var proxies []*Proxy
	shaped := func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil {
			b.Fatal(err)
		}
		shape := ShapeTCP
		if u.Scheme == "coap" {
			shape = ShapeUDP
		}
		p, err := shape(u.Host, sh)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(p.Close)
		proxies = append(proxies, p)
		u.Host = p.Addr
		return u.String()
	}
	upURL, shapedPeer := shaped(benchServeDir(b, static)), shaped(peerURL)
	zstdURL, xzURL := shaped(caches["zstd"]), shaped(caches["xz"])
	linkBytes := func() int64 {
		var n int64
		for _, p := range proxies {
			st := p.Stats()
			n += st.Up + st.Down
		}
		return n
	}

	for _, v := range []struct{ name, source, cache string }{
		{name: "nix-copy-zstd", cache: zstdURL},
		{name: "nix-copy-xz", cache: xzURL},
		{name: "erismount-upstream", source: "upstream"},
		{name: "erismount-tree", source: "tree"},
		{name: "erismount-eris-nar", source: "eris-nar"},
		{name: "erismount-auto", source: "auto"},
	} {
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(narSize)
			b.StopTimer()
			for range b.N {
				testenv.NixRemove(b, item)
				target := v.cache
				var p *testenv.Process
				if v.source != "" {
					target, p = benchSubstituteServer(b, "-v", "--store-dir", "/nix/store", "--upstream", upURL, "--peer", shapedPeer,
						"--nar-source", v.source, "--nix-key", serverSec, "--trusted-nix-key", pubKey)
				}
				before := linkBytes()
				t0 := time.Now()
				b.StartTimer()
				_, err := testenv.Nix(b, "nix-store", "--realise", item, "--option", "substituters", target,
					"--option", "trusted-public-keys", serverKey, "--option", "require-sigs", "true",
					"--option", "narinfo-cache-negative-ttl", "0")
				b.StopTimer()
				d := time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				moved := linkBytes() - before
				b.ReportMetric(d.Seconds(), "s")
				b.ReportMetric(float64(moved)/1e6, "link-MB")
				if p != nil {
					p.Signal(syscall.SIGTERM)
					p.Wait(30 * time.Second)
					for _, l := range strings.Split(p.Stderr(), "\n") {
						if strings.Contains(l, `msg="nar served"`) || strings.Contains(l, "failed") {
							b.Log(l)
						}
					}
				}
				b.Logf("%s: %.2f s, %.1f MB over the link (nar %.1f MB)", v.name, d.Seconds(), float64(moved)/1e6, float64(narSize)/1e6)
			}
		})
	}
}

// benchNixKey writes a Nix key pair into dir; it returns the secret key
// file and the public key.
func benchNixKey(b *testing.B, dir, name string) (sec, pub string) {
	k, err := narinfo.GenerateNixKey(name, nil)
	if err != nil {
		b.Fatal(err)
	}
	sec = filepath.Join(dir, name+".sec")
	if err := os.WriteFile(sec, []byte(k.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return sec, k.Public().String()
}

// benchServeDir serves dir with Go's file server on loopback.
func benchServeDir(b *testing.B, dir string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go hs.Serve(ln)
	b.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String()
}

// benchSubstituteServer starts substitute-server with an empty cache and returns its URL.
func benchSubstituteServer(b testing.TB, args ...string) (string, *testenv.Process) {
	return testenv.StartSubstituteServer(b, args...)
}
