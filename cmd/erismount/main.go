// Command erismount mounts ERIS read capabilities as read-only trees and
// serves, publishes and copies the blocks behind them. This package is
// wiring only: every behaviour lives in a package a test can reach.
//
//	erismount urn:eris:B4… /mnt/x          # mount (same as `erismount mount`)
//	erismount serve --listen coap://127.0.0.1:5683
//	erismount publish ./tree
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"erismount/eris"
	"erismount/fetcher"
	"erismount/narinfo/nar"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Exit codes: what a script can branch on.
const (
	exitOK          = 0
	exitError       = 1 // anything else
	exitUsage       = 2 // bad flags, arguments or input (malformed URN, narinfo…)
	exitUnavailable = 3 // blocks missing, peers unreachable, deadline passed
	exitCorrupt     = 4 // verification failed: corrupt block, hash or signature mismatch
)

// usageError marks an error as the user's: wrong flags or arguments.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitCoder lets a package error choose its exit code (e.g. a signature
// outcome).
type exitCoder interface{ ExitCode() int }

func exitCode(err error) int {
	var ue usageError
	var ec exitCoder
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ec):
		return ec.ExitCode()
	case errors.As(err, &ue), errors.Is(err, eris.ErrMalformed), errors.Is(err, nar.ErrFormat):
		return exitUsage
	case errors.Is(err, eris.ErrCorrupt):
		return exitCorrupt
	case errors.Is(err, eris.ErrNotFound), errors.Is(err, fetcher.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return exitUnavailable
	}
	return exitError
}

// app holds what every subcommand shares: the global flags, standard
// streams and the logger.
type app struct {
	storePath string   // --store
	peers     []string // --peer, plus $ERISMOUNT_PEERS
	listens   []string // --listen
	discover  bool     // --discover (mount, pin): find peers on the local link
	verbose   bool     // -v
	json      bool     // --json
	metrics   string   // --metrics host:port
	cacheSize string   // --cache-size: soft quota of the block cache

	stdin          io.Reader
	stdout, stderr io.Writer
	log            *slog.Logger

	// forced is closed by a second SIGINT/SIGTERM: the first cancels the
	// command's context and asks it to stop cleanly (a mount detaches and
	// serves its open files until they are closed), the second says stop
	// now.
	forced <-chan struct{}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, forced, stop := notifySignals(ctx)
	defer stop()
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, forced: forced}
	root := newRootCmd(a)
	root.SetArgs(mountShorthand(root, args))
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err != nil && !errors.As(err, new(exitStatus)) { // a program's status (run) is its own
		fmt.Fprintf(stderr, "erismount: %v\n", err)
	}
	return exitCode(err)
}

// notifySignals returns a context cancelled by the first SIGINT or
// SIGTERM and a channel closed by the second, counted in the order they
// came; stop ends the handling.
func notifySignals(parent context.Context) (ctx context.Context, forced <-chan struct{}, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	force := make(chan struct{})
	done := make(chan struct{})
	go func() {
		n := 0
		for {
			select {
			case sig := <-sigc:
				n++
				switch n {
				case 1:
					cancel(fmt.Errorf("%v", sig))
				case 2:
					close(force)
				}
			case <-done:
				return
			}
		}
	}()
	return ctx, force, func() {
		signal.Stop(sigc)
		close(done)
		cancel(nil)
	}
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "erismount [URN DIR]",
		Short: "Mount ERIS read capabilities lazily, verified, from untrusted peers",
		Long: `erismount mounts an ERIS read capability (urn:eris:…) as a read-only tree and
fetches only the blocks that are read, from peers over CoAP or HTTP, verifying
each one and caching it in memory and SQLite.

"erismount URN DIR" is short for "erismount mount URN DIR".

Exit codes: 0 ok, 1 error, 2 usage or malformed input, 3 blocks unavailable
(missing, unreachable peers, deadline), 4 verification failed.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelWarn
			if a.verbose {
				level = slog.LevelDebug
			}
			a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
			if env := os.Getenv("ERISMOUNT_PEERS"); env != "" {
				a.peers = append(a.peers, strings.Fields(env)...)
			}
			return nil
		},
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			if mount := findCmd(cmd, "mount"); mount != nil && strings.HasPrefix(strings.ToLower(args[0]), "urn:") {
				return mount.RunE(mount, args)
			}
			return usageError{fmt.Errorf("unknown command %q (see erismount --help)", args[0])}
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.storePath, "store", "", "SQLite block store (default $XDG_CACHE_HOME/erismount/blocks.sqlite); for publish and serve also s3://BUCKET/PREFIX")
	pf.StringArrayVar(&a.peers, "peer", nil, "peer URL to fetch blocks from (repeatable): coap://, coap+tcp://, coap+unix://, http://, s3://; also $ERISMOUNT_PEERS")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log details to stderr")
	pf.BoolVar(&a.json, "json", false, "print data as JSON")
	pf.StringVar(&a.cacheSize, "cache-size", "", "soft quota of the block cache, e.g. 20GiB (default 10GiB; the hard cap is a quarter above it; pinned and mounted blocks are never evicted)")

	for _, c := range subcommands(a) {
		root.AddCommand(c)
	}
	return root
}

// subcommands lists every subcommand; each lives in its own file.
func subcommands(a *app) []*cobra.Command {
	return []*cobra.Command{
		newEncodeCmd(a),
		newDecodeCmd(a),
		newMountCmd(a),
		newNarinfoCmd(a),
		newNarCmd(a),
		newCopyInCmd(a),
		newPublishCmd(a),
		newGetCmd(a),
		newPinCmd(a),
		newUnpinCmd(a),
		newPinsCmd(a),
		newStatusCmd(a),
		newDemoCmd(a),
		newSubstituteCmd(a),
		newServeCmd(a),
		newStoreCmd(a),
		newRunCmd(a),
	}
}

func findCmd(root *cobra.Command, name string) *cobra.Command {
	for _, c := range root.Commands() {
		if c.Name() == name {
			return c
		}
	}
	return nil
}

// exactArgs is cobra.ExactArgs whose error is a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// parseURN parses a capability argument; a malformed one is a usage error.
func parseURN(s string) (eris.ReadCapability, error) {
	rc, err := eris.ParseURN(s)
	if err != nil {
		return rc, usageError{err}
	}
	return rc, nil
}

// addListenFlag adds --listen to a server command.
func (a *app) addListenFlag(cmd *cobra.Command, help string) {
	cmd.Flags().StringArrayVar(&a.listens, "listen", nil, help)
}

// addMetricsFlag adds --metrics to a long-running command.
func (a *app) addMetricsFlag(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.metrics, "metrics", "", "serve OpenMetrics on this host:port (e.g. 127.0.0.1:9100)")
}
