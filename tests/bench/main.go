package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// runMain parses args, runs the benchmark and prints its table to stdout.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "store-run" { // see storerun.go
		return storeRunMain(ctx, args[1:], stdout, stderr)
	}
	fl := flag.NewFlagSet("bench", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var (
		cfg        Config
		sizeMiB    = fl.Float64("size", 128, "content of the generated tree, in MiB")
		rateMbit   = fl.Float64("rate", 100, "bandwidth cap of the link each way, in Mbit/s (0: none)")
		transports = fl.String("transports", "coap,coap+tcp", "CoAP transports of the lazy side, comma separated (coap, coap+tcp)")
		ops        = fl.String("ops", "", "operations to measure, comma separated (ready, first-byte, ls, small, ls+small, run, read-all, read-all-n); empty: all")
		mountArgs  = fl.String("mount-args", "", "extra flags for erismount mount, space separated (e.g. \"--readahead 0\")")
		verbose    = fl.Bool("v", false, "log progress to stderr")
		jsonOut    = fl.String("json", "", "with -suite: also write every sample as JSON to this file")
		render     = fl.String("render", "", "print the report of the suite run saved with -json in this file, and run nothing")
		prepCache  = fl.String("prep-cache", "", "with -suite: keep the compressed nars in this directory between runs (compressing is not measured)")
		scens      = fl.String("scenarios", "", "with -suite: measure only these scenarios, comma separated (nar, zstd, xz, ls+small, blocks, eris-nar, upgrade); empty: all")
		suite      = fl.String("suite", "", "measure whole items of real software instead: trees, comma separated (toolchain, protobuf, coreutils, libc6, perl-modules-5.36, generated; \"all\")")
	)
	fl.IntVar(&cfg.Files, "files", 4000, "files in the generated tree")
	fl.Uint64Var(&cfg.Seed, "seed", 1, "seed of the generated tree")
	fl.DurationVar(&cfg.Shape.RTT, "rtt", 20*time.Millisecond, "round-trip time the link adds")
	fl.Int64Var(&cfg.Shape.Queue, "queue", 8<<20, "bytes a direction of the link queues before dropping datagrams or holding back TCP")
	fl.DurationVar(&cfg.OpTimeout, "op-timeout", 10*time.Minute, "stop a lazy operation that takes longer, and report it so (0: never)")
	fl.IntVar(&cfg.Runs, "runs", 3, "repetitions (the table shows medians)")
	fl.IntVar(&cfg.Readers, "readers", 16, "concurrent readers of \"read everything (N readers)\"")
	fl.StringVar(&cfg.Erismount, "erismount", "", "erismount binary to run (default: build erismount/cmd/erismount)")
	fl.BoolVar(&cfg.DropCaches, "drop-caches", true, "drop the kernel's caches before cold and warm runs (root)")
	fl.StringVar(&cfg.WorkDir, "workdir", "", "directory for the work directory (default: the system's temporary one)")
	fl.BoolVar(&cfg.Keep, "keep", false, "keep the work directory")
	fl.StringVar(&cfg.MountLogs, "mount-logs", "", "keep each mount's log (erismount -v, run in the foreground) in this directory")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	cfg.Bytes = int64(*sizeMiB * (1 << 20))
	cfg.Shape.Rate = *rateMbit * 1e6
	cfg.Transports = splitList(*transports, ",")
	cfg.Ops = splitList(*ops, ",")
	cfg.MountArgs = strings.Fields(*mountArgs)
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	for _, tr := range cfg.Transports {
		if tr != "coap" && tr != "coap+tcp" {
			return fmt.Errorf("-transports: %q is not coap or coap+tcp", tr)
		}
	}
	if *render != "" {
		res, err := LoadSuiteResults(*render)
		if err != nil {
			return err
		}
		res.Markdown(stdout, res.Command)
		return nil
	}
	if *suite != "" {
		names := splitList(*suite, ",")
		if *suite == "all" {
			names = itemOrder
		}
		for _, n := range names {
			if knownItems[n] == nil {
				return fmt.Errorf("-suite: unknown tree %q (known: %s)", n, strings.Join(itemOrder, ", "))
			}
		}
		sc := SuiteConfig{Items: names, Scenarios: splitList(*scens, ","), PrepCache: *prepCache, Shape: cfg.Shape, Runs: cfg.Runs, GenFiles: cfg.Files, GenBytes: cfg.Bytes,
			Erismount: cfg.Erismount, MountLogs: cfg.MountLogs, WorkDir: cfg.WorkDir, Keep: cfg.Keep, DropCaches: cfg.DropCaches, Logger: cfg.Logger}
		res, err := RunSuite(ctx, sc)
		if err != nil {
			return err
		}
		res.Command = "go run ./tests/bench " + strings.Join(args, " ")
		if *jsonOut != "" {
			b, err := json.MarshalIndent(res, "", "  ")
			if err != nil {
				return err
			}
			if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
				return err
			}
		}
		res.Markdown(stdout, res.Command)
		return nil
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("the lazy side mounts with FUSE: %w", err)
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	res.Markdown(stdout, "go run ./tests/bench "+strings.Join(args, " "))
	return nil
}

// splitList splits s at sep, dropping empty elements.
func splitList(s, sep string) []string {
	var out []string
	for _, e := range strings.Split(s, sep) {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
