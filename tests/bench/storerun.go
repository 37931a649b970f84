package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The store-run benchmark (go run ./tests/bench store-run): time from
// nothing local to a program's first output, through `erismount run`
// against `nix-store -r` of its closure from a plain zstd binary cache
// followed by running it, on the same shaped link.
//
// The closure is built with Debian's nix-bin (no nixpkgs): three items,
// data (many files, most never read), lib and top, whose program reads a
// few MB of the other two by their store paths before it prints anything.
// The baseline is `nix copy --to file://…?compression=zstd` served over
// HTTP through a shaped TCP path; the lazy side gets the narinfos
// `erismount publish` wrote through the same kind of path (--upstream)
// and blocks over CoAP through a shaped UDP or TCP path, with an empty
// block cache. Kernel caches are dropped before each measurement. It needs
// root, nix-bin and FUSE.

// storeRunExpr is the closure; %d are the sizes in MiB of data's blobs
// (count) and of lib's unused file.
const storeRunExpr = `{ nonce }:
let
  mk = name: script: derivation {
    inherit name nonce; system = "x86_64-linux"; builder = "/bin/sh";
    args = [ "-c" script ]; PATH = "/usr/bin:/bin";
  };
  # Text-like content (base64 of random bytes: zstd saves a quarter).
  data = mk "bench-store-data" ''
    mkdir -p $out/share/data
    for i in $(seq 1 %d); do head -c 786432 /dev/urandom | base64 > $out/share/data/blob$i; done
    head -c 786432 /dev/urandom | base64 > $out/share/data/read
  '';
  lib = mk "bench-store-lib" ''
    mkdir -p $out/bin $out/share
    head -c %d /dev/urandom | base64 > $out/share/unused
    head -c 1572864 /dev/urandom | base64 > $out/share/table
    printf '#!/bin/sh\ncksum < $1\n' > $out/bin/sum
    chmod +x $out/bin/sum
  '';
in mk "bench-store-top" ''
  mkdir -p $out/bin
  printf '#!/bin/sh\necho "top: $(${lib}/bin/sum ${lib}/share/table) $(${lib}/bin/sum ${data}/share/data/read)"\n' > $out/bin/prog
  chmod +x $out/bin/prog
''
`

func storeRunMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("bench store-run", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var (
		sh        Shape
		rateMbit  = fl.Float64("rate", 100, "bandwidth cap of the link each way, in Mbit/s (0: none)")
		blobs     = fl.Int("blobs", 64, "1 MiB files of the data item the program never reads (it reads one more)")
		unusedMiB = fl.Int("unused", 16, "MiB of the lib item the program never reads")
		em        = fl.String("erismount", "", "erismount binary (default: build erismount/cmd/erismount)")
		transport = fl.String("transport", "coap", "CoAP transport of the lazy side (coap, coap+tcp)")
		verbose   = fl.Bool("v", false, "print erismount run's log (-v) to stderr")
		extra     = fl.String("run-args", "", "extra flags for erismount run, space separated")
	)
	fl.DurationVar(&sh.RTT, "rtt", 20*time.Millisecond, "round-trip time the link adds")
	if err := fl.Parse(args); err != nil {
		return err
	}
	sh.Rate = *rateMbit * 1e6
	if os.Geteuid() != 0 {
		return fmt.Errorf("store-run needs root (nix-build into /nix/store, dropping caches)")
	}
	work, err := os.MkdirTemp("", "erismount-store-run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := *em
	if bin == "" {
		bin = filepath.Join(work, "erismount")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "erismount/cmd/erismount").CombinedOutput(); err != nil {
			return fmt.Errorf("build erismount: %v\n%s", err, out)
		}
	}
	say := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }
	nix := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "NIX_CONFIG=build-users-group =", "XDG_CACHE_HOME="+filepath.Join(work, "nixcache"), "NIX_REMOTE=")
		var e strings.Builder
		cmd.Stderr = &e
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, e.String())
		}
		return strings.TrimSpace(string(out)), nil
	}

	// 1. The closure.
	expr := filepath.Join(work, "closure.nix")
	if err := os.WriteFile(expr, fmt.Appendf(nil, storeRunExpr, *blobs, *unusedMiB<<20), 0o644); err != nil {
		return err
	}
	nonce := make([]byte, 8)
	rand.Read(nonce)
	top, err := nix("nix-build", "--option", "sandbox", "false", "--no-out-link", "--argstr", "nonce", hex.EncodeToString(nonce), expr)
	if err != nil {
		return err
	}
	reqs, err := nix("nix-store", "-qR", top)
	if err != nil {
		return err
	}
	closure := strings.Fields(reqs)
	drvs, err := nix(append([]string{"nix-store", "--query", "--deriver"}, closure...)...)
	if err != nil {
		return err
	}
	defer func() {
		// The closure, then the derivations nix-build left.
		exec.Command("nix-store", append([]string{"--delete"}, closure...)...).Run()
		exec.Command("nix-store", append([]string{"--delete"}, strings.Fields(drvs)...)...).Run()
	}()
	narSize, err := nix(append([]string{"du", "-scb"}, closure...)...)
	if err != nil {
		return err
	}
	lines := strings.Split(narSize, "\n")
	total := strings.Fields(lines[len(lines)-1])[0]
	want, err := nix(top + "/bin/prog")
	if err != nil {
		return err
	}
	say("closure of %s: %d items, %s bytes; the program prints %q", top, len(closure), total, want)

	// 2. The baseline cache and the published blocks and narinfos.
	keySec, keyPub := filepath.Join(work, "key.sec"), filepath.Join(work, "key.pub")
	if _, err := nix("nix-store", "--generate-binary-cache-key", "bench-1", keySec, keyPub); err != nil {
		return err
	}
	pubBytes, _ := os.ReadFile(keyPub)
	pub := strings.TrimSpace(string(pubBytes))
	binCache := filepath.Join(work, "bincache")
	if _, err := nix(append([]string{"nix", "--extra-experimental-features", "nix-command", "copy", "--to", "file://" + binCache + "?compression=zstd&secret-key=" + keySec}, closure...)...); err != nil {
		return err
	}
	narinfoDir := filepath.Join(work, "narinfo")
	if err := os.Mkdir(narinfoDir, 0o755); err != nil {
		return err
	}
	server := filepath.Join(work, "server.sqlite")
	if out, err := exec.CommandContext(ctx, bin, append([]string{"publish", "--store", server, "--nix-key", keySec, "--narinfo-dir", narinfoDir}, closure...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("publish: %v\n%s", err, out)
	}
	zst, _ := nix("du", "-scb", filepath.Join(binCache, "nar"))
	zlines := strings.Split(zst, "\n")
	say("zstd binary cache: %s bytes of nars", strings.Fields(zlines[len(zlines)-1])[0])
	if _, err := nix(append([]string{"nix-store", "--delete"}, closure...)...); err != nil {
		return err
	}

	// 3. Servers behind shaped paths.
	httpURL := func(dir string) (string, *Proxy, func(), error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", nil, nil, err
		}
		hs := &http.Server{Handler: http.FileServer(http.Dir(dir))}
		go hs.Serve(ln)
		p, err := ShapeTCP(ln.Addr().String(), sh)
		if err != nil {
			hs.Close()
			return "", nil, nil, err
		}
		return "http://" + p.Addr, p, func() { p.Close(); hs.Close() }, nil
	}
	cacheURL, cacheProxy, stop1, err := httpURL(binCache)
	if err != nil {
		return err
	}
	defer stop1()
	upURL, upProxy, stop2, err := httpURL(narinfoDir)
	if err != nil {
		return err
	}
	defer stop2()
	serve := exec.CommandContext(ctx, bin, "serve", "--store", server, "--listen", *transport+"://127.0.0.1:0")
	serveOut, _ := serve.StdoutPipe()
	if err := serve.Start(); err != nil {
		return err
	}
	defer func() { serve.Process.Signal(os.Interrupt); serve.Wait() }()
	line, err := bufio.NewReader(serveOut).ReadString('\n')
	if err != nil {
		return fmt.Errorf("serve: %v", err)
	}
	peerAddr := strings.TrimPrefix(strings.TrimSpace(line), *transport+"://")
	peerAddr, path, _ := strings.Cut(peerAddr, "/")
	var peerProxy *Proxy
	if *transport == "coap" {
		peerProxy, err = ShapeUDP(peerAddr, sh)
	} else {
		peerProxy, err = ShapeTCP(peerAddr, sh)
	}
	if err != nil {
		return err
	}
	defer peerProxy.Close()
	peer := *transport + "://" + peerProxy.Addr + "/" + path

	// firstOutput runs cmd and returns when its first byte of output came
	// and when it ended, and its output.
	var runLog strings.Builder
	firstOutput := func(t0 time.Time, cmd *exec.Cmd) (first, end time.Duration, out string, err error) {
		r, err := cmd.StdoutPipe()
		if err != nil {
			return 0, 0, "", err
		}
		var e strings.Builder
		cmd.Stderr = &e
		if err := cmd.Start(); err != nil {
			return 0, 0, "", err
		}
		br := bufio.NewReader(r)
		b, rerr := br.ReadByte()
		first = time.Since(t0)
		rest, _ := io.ReadAll(br)
		err = cmd.Wait()
		end = time.Since(t0)
		runLog.WriteString(e.String())
		if rerr != nil || err != nil {
			return 0, 0, "", fmt.Errorf("%s: %v %v\n%s", strings.Join(cmd.Args, " "), rerr, err, e.String())
		}
		return first, end, string(append([]byte{b}, rest...)), nil
	}

	// 4. Baseline: nix-store -r of the closure, then the program.
	dropCaches()
	before := cacheProxy.Stats().Down
	t0 := time.Now()
	if _, err := nix("nix-store", "-r", top, "--option", "substituters", cacheURL, "--option", "trusted-public-keys", pub,
		"--option", "require-sigs", "true", "--option", "narinfo-cache-negative-ttl", "0"); err != nil {
		return err
	}
	restored := time.Since(t0)
	nFirst, nEnd, nOut, err := firstOutput(t0, exec.CommandContext(ctx, top+"/bin/prog"))
	if err != nil {
		return err
	}
	nBytes := cacheProxy.Stats().Down - before
	if strings.TrimSpace(nOut) != want {
		return fmt.Errorf("baseline printed %q, want %q", nOut, want)
	}
	if _, err := nix(append([]string{"nix-store", "--delete"}, closure...)...); err != nil {
		return err
	}

	// 5. erismount run from nothing local.
	dropCaches()
	beforeUp, beforePeer := upProxy.Stats().Down, peerProxy.Stats().Down
	runArgs := append([]string{"run"}, strings.Fields(*extra)...)
	if *verbose {
		runArgs = append(runArgs, "-v")
	}
	cmd := exec.CommandContext(ctx, bin, append(runArgs, "--store", filepath.Join(work, "client.sqlite"), "--narinfo-cache", filepath.Join(work, "narinfo-cache.sqlite"),
		"--upstream", upURL, "--trusted-nix-key", pub, "--peer", peer, top+"/bin/prog")...)
	t0 = time.Now()
	runLog.Reset()
	say("erismount run starts at %s", t0.UTC().Format("15:04:05.000"))
	lFirst, lEnd, lOut, err := firstOutput(t0, cmd)
	if err != nil {
		return err
	}
	if strings.TrimSpace(lOut) != want {
		return fmt.Errorf("erismount run printed %q, want %q", lOut, want)
	}
	lBytes := upProxy.Stats().Down - beforeUp + peerProxy.Stats().Down - beforePeer
	if *verbose {
		say("erismount run's log:\n%s", runLog.String())
	}

	fmt.Fprintf(stdout, "| store-run, RTT %v, %.0f Mbit/s, closure %s bytes (%d items) | first output | program done | bytes over the link |\n|---|---|---|---|\n",
		sh.RTT, *rateMbit, total, len(closure))
	fmt.Fprintf(stdout, "| nix-store -r from a zstd cache, then run (restored in %v) | %v | %v | %d |\n", restored.Round(time.Millisecond), nFirst.Round(time.Millisecond), nEnd.Round(time.Millisecond), nBytes)
	fmt.Fprintf(stdout, "| erismount run (%s), empty cache | %v | %v | %d |\n", *transport, lFirst.Round(time.Millisecond), lEnd.Round(time.Millisecond), lBytes)
	fmt.Fprintf(stdout, "| ratio (baseline / erismount run) | %.1fx | %.1fx | %.1fx |\n",
		float64(nFirst)/float64(lFirst), float64(nEnd)/float64(lEnd), float64(nBytes)/float64(max(lBytes, 1)))
	return nil
}
