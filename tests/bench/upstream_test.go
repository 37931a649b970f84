package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"erismount/fetcher"
	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/tests/testenv"
)

// BenchmarkSubstituteUpstream is issue 14's figure: `nix-store -r` of real
// trees through `erismount substitute-server --upstream` with an empty block
// cache, the upstream (publish's static cache: zstd nars, ERIS, ERIS-Nar, on
// a plain file server) and the CoAP peer behind shaped links (20 ms RTT,
// 100 Mbit/s each way), each nar source forced and the automatic choice,
// against `nix-store -r` straight from `nix copy` caches (zstd, xz) over the
// same link. The trees: Go's src/cmd and bin (about 80 MB in 4,400 files)
// and the Debian packages coreutils, libc6 and perl-modules-5.36 (the
// suite's set-up: apt-get download + dpkg -x). Every cell runs
// upstreamRuns times, the runs of a tree interleaved across its cells; the
// table gives medians, link-MB is what crossed the shaped links, headers
// included. It ends with the goals computed from the same run: auto
// over the best single source (≤ 1.1×) and over the plain zstd cache
// (≤ 1.2×). Run once:
//
//	go test ./tests/bench -run XXX -bench SubstituteUpstream -benchtime 1x -timeout 1h -v
func BenchmarkSubstituteUpstream(b *testing.B) {
	testenv.RequireNix(b)
	ctx := context.Background()
	load := loadavg()
	work := b.TempDir()
	goroot := strings.TrimSpace(func() string { out, _ := exec.Command("go", "env", "GOROOT").Output(); return string(out) }())
	goTree := filepath.Join(work, "go-src-cmd-bin")
	for _, d := range []string{"src/cmd", "bin"} {
		os.MkdirAll(filepath.Dir(filepath.Join(goTree, d)), 0o755)
		if out, err := exec.Command("cp", "-r", filepath.Join(goroot, d), filepath.Join(goTree, d)).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v\n%s", err, out)
		}
	}
	debs, err := SetupItems(ctx, work, []string{"coreutils", "libc6", "perl-modules-5.36"}, &itemSetup{})
	if err != nil {
		b.Fatal(err)
	}
	type tree struct {
		name, note, path string
		narSize          int64
	}
	trees := []*tree{{name: "go-src-cmd-bin", note: "Go's " + runtime.Version() + " src/cmd and bin", path: goTree}}
	for _, it := range debs {
		trees = append(trees, &tree{name: it.Name, note: it.Note, path: it.Dir})
	}

	keys := b.TempDir()
	pubSec, pubKey := benchNixKey(b, keys, "publisher-1")
	serverSec, serverKey := benchNixKey(b, keys, "loopback-1")
	var items []string
	for _, t := range trees {
		t.path = testenv.NixImport(b, t.path, "erismount-bench-upstream-"+t.name, nil)
		hw := nar.NewHashingWriter(nil)
		if err := nar.WriteFS(ctx, hw, nar.DirFS(t.path)); err != nil {
			b.Fatal(err)
		}
		t.narSize = hw.Sum().Size
		items = append(items, t.path)
	}

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
	if _, stderr, code := testenv.Run(b, append([]string{"publish", "--peer", tcpURL, "--nix-key", pubSec, "--narinfo-dir", static,
		"--nar-dir", filepath.Join(static, "nar"), "--compression", "zstd", "--eris-nar"}, items...)...); code != 0 {
		b.Fatalf("publish: exit %d\n%s", code, stderr)
	}
	b.Logf("published %d trees in %v", len(items), time.Since(t0))
	caches := map[string]string{}
	for _, comp := range []string{"zstd", "xz"} {
		dir := b.TempDir()
		if _, err := testenv.Nix(b, "nix", append([]string{"--extra-experimental-features", "nix-command", "copy", "--to",
			"file://" + dir + "?compression=" + comp + "&secret-key=" + serverSec}, items...)...); err != nil {
			b.Fatal(err)
		}
		caches[comp] = benchServeDir(b, dir)
	}
	for _, it := range items {
		testenv.NixRemove(b, it)
	}

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

	cells := []upstreamCell{
		{name: "nix-copy-zstd", cache: zstdURL},
		{name: "nix-copy-xz", cache: xzURL},
		{name: "upstream", source: "upstream"},
		{name: "tree", source: "tree"},
		{name: "eris-nar", source: "eris-nar"},
		{name: "auto", source: "auto"},
	}
	results := map[string]map[string][]upstreamRun{}
	for _, t := range trees {
		results[t.name] = map[string][]upstreamRun{}
		for run := range upstreamRuns {
			for _, c := range cells {
				testenv.NixRemove(b, t.path)
				target := c.cache
				var p *testenv.Process
				if c.source != "" {
					target, p = benchSubstituteServer(b, "-v", "--store-dir", "/nix/store", "--upstream", upURL, "--peer", shapedPeer,
						"--nar-source", c.source, "--nix-key", serverSec, "--trusted-nix-key", pubKey)
				}
				before := linkBytes()
				t0 := time.Now()
				_, err := testenv.Nix(b, "nix-store", "--realise", t.path, "--option", "substituters", target,
					"--option", "trusted-public-keys", serverKey, "--option", "require-sigs", "true",
					"--option", "narinfo-cache-negative-ttl", "0", "--option", "narinfo-cache-positive-ttl", "0")
				d := time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				r := upstreamRun{secs: d.Seconds(), linkMB: float64(linkBytes()-before) / 1e6}
				if p != nil {
					p.Signal(syscall.SIGTERM)
					p.Wait(30 * time.Second)
					for _, l := range strings.Split(p.Stderr(), "\n") {
						if strings.Contains(l, `msg="nar served"`) {
							if i := strings.Index(l, "source="); i >= 0 {
								r.took, _, _ = strings.Cut(l[i+len("source="):], " ")
							}
						}
						if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
							b.Log(l)
						}
					}
				}
				results[t.name][c.name] = append(results[t.name][c.name], r)
				b.Logf("%s %s run %d: %.2f s, %.2f MB over the link (nar %.2f MB) %s", t.name, c.name, run+1, r.secs, r.linkMB, float64(t.narSize)/1e6, r.took)
			}
		}
		testenv.NixRemove(b, t.path)
	}

	var out strings.Builder
	fmt.Fprintf(&out, "load average before: %s; after: %s; link %v RTT, %.0f Mbit/s each way; medians of %d runs\n\n", load, loadavg(), sh.RTT, sh.Rate/1e6, upstreamRuns)
	fmt.Fprintf(&out, "| tree | nar MB |")
	for _, c := range cells {
		fmt.Fprintf(&out, " %s s (MB) |", c.name)
	}
	fmt.Fprintf(&out, " auto / best single | auto / zstd cache |\n|---|---|")
	for range len(cells) + 2 {
		out.WriteString("---|")
	}
	out.WriteString("\n")
	for _, t := range trees {
		med := map[string]upstreamRun{}
		fmt.Fprintf(&out, "| %s | %.1f |", t.name, float64(t.narSize)/1e6)
		for _, c := range cells {
			m := medianRun(results[t.name][c.name])
			med[c.name] = m
			fmt.Fprintf(&out, " %.2f (%.1f) |", m.secs, m.linkMB)
		}
		best := ""
		for _, s := range []string{"upstream", "tree", "eris-nar"} {
			if best == "" || med[s].secs < med[best].secs {
				best = s
			}
		}
		auto := med["auto"]
		r1, r2 := auto.secs/med[best].secs, auto.secs/med["nix-copy-zstd"].secs
		fmt.Fprintf(&out, " %.2f× vs %s (%s) | %.2f× (%s) |\n", r1, best, verdict(r1, 1.1), r2, verdict(r2, 1.2))
		b.ReportMetric(r1, t.name+"-auto/best")
		b.ReportMetric(r2, t.name+"-auto/zstd")
	}
	out.WriteString("\n")
	for _, t := range trees {
		var took []string
		for _, r := range results[t.name]["auto"] {
			took = append(took, r.took)
		}
		fmt.Fprintf(&out, "- %s: %s; auto took %s\n", t.name, t.note, strings.Join(took, ", "))
	}
	b.Log("\n" + out.String())
}

// upstreamRuns is how many times BenchmarkSubstituteUpstream runs each cell.
const upstreamRuns = 3

// An upstreamCell is one column of BenchmarkSubstituteUpstream: a plain
// cache (cache) or the server with a nar source forced or auto (source).
type upstreamCell struct{ name, source, cache string }

// An upstreamRun is one measured `nix-store -r`: its time, the bytes over
// the shaped links and the source the server logged.
type upstreamRun struct {
	secs, linkMB float64
	took         string
}

// medianRun is the run of median time, with its own bytes.
func medianRun(rs []upstreamRun) upstreamRun {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b upstreamRun) int { return cmp.Compare(a.secs, b.secs) })
	return s[len(s)/2]
}

func verdict(ratio, goal float64) string {
	if ratio <= goal {
		return "met"
	}
	return "missed"
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
