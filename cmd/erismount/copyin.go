package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"erismount/narinfo"
)

func newCopyInCmd(a *app) *cobra.Command {
	var narinfoPath, aclPath, storeDir string
	cmd := &cobra.Command{
		Use:   "copy-in --narinfo FILE [--acl FILE] [--store-dir DIR]",
		Short: "Copy the store item of a signed narinfo into a store, verified, from its ERIS field",
		Long: `Copy the store item a narinfo describes into a store directory, from the
ERIS-FS tree its ERIS field names, without mounting anything:

  1. the narinfo's Guix signature must be valid under the ACL;
  2. the tree is decoded through the block store (--store) and peers (--peer),
     every block verified against its reference;
  3. it is written into a fresh temporary entry in the store directory with the
     metadata of a store item (files 0444/0555, directories 0555, mtime 1,
     symlinks never followed), while the nar of what is written is hashed;
  4. only if that NarHash and NarSize equal the signed ones is it renamed to its
     store path. An existing item is never overwritten.

On any mismatch, error or interruption (Ctrl-C) the temporary entry is removed
and nothing appears in the store. This writes files only: registering the item
in the daemon's database is not done (prefer the substitute server on a live
Guix system). A progress bar is shown when stderr is a terminal.

Exit codes: 0 copied, 2 malformed narinfo or ACL, 3 blocks unavailable,
4 signature not valid, corrupt block or NarHash/NarSize mismatch.`,
		Example: `  erismount copy-in --narinfo hello.narinfo --peer coap://192.0.2.7:5683
  erismount copy-in --narinfo hello.narinfo --acl ./acl --store-dir /tmp/root/gnu/store`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if narinfoPath == "" {
				return usageError{fmt.Errorf("--narinfo is required")}
			}
			n, err := a.readNarinfo(narinfoPath)
			if err != nil {
				return err
			}
			acl, err := readACL(aclPath)
			if err != nil {
				return err
			}
			if storeDir == "" {
				storeDir = n.StoreDir()
			}
			src, err := a.openSource(ctx)
			if err != nil {
				return err
			}
			defer src.Close()
			opts := narinfo.CopyInOptions{Logger: a.log}
			bar := a.progressBar(n.NarSize, "copy-in "+n.BaseName())
			if bar != nil {
				opts.Progress = func(done int64) { bar.Set64(done) }
			}
			err = narinfo.CopyInERIS(ctx, n, acl, src, storeDir, opts)
			if bar != nil {
				bar.Clear() // leave the terminal line to the result or the error
			}
			if err != nil {
				return err
			}
			final := filepath.Join(storeDir, n.BaseName())
			if a.json {
				return a.printJSON(map[string]any{"path": final, "nar_hash": n.NarHash.String(), "nar_size": n.NarSize})
			}
			fmt.Fprintln(a.stdout, final)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&narinfoPath, "narinfo", "", "the signed narinfo (- for stdin)")
	f.StringVar(&aclPath, "acl", defaultACL, "ACL of authorized Guix signing keys")
	f.StringVar(&storeDir, "store-dir", "", "store directory to copy into (default: the directory of the narinfo's StorePath, e.g. /gnu/store); it must be that directory, or it under another root (/tmp/root/gnu/store), else copy-in refuses with exit 4")
	return cmd
}

// progressBar returns a byte progress bar on stderr when it is a terminal,
// else nil.
func (a *app) progressBar(total int64, what string) *progressbar.ProgressBar {
	return a.newBar(total, what, progressbar.OptionShowBytes(true))
}

// newBar is the progress bar of every long command: on stderr, only when
// it is a terminal (nil otherwise), throttled, cleared when done.
func (a *app) newBar(total int64, what string, opts ...progressbar.Option) *progressbar.ProgressBar {
	f, ok := a.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progressbar.NewOptions64(total, append([]progressbar.Option{
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(what),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionClearOnFinish(),
	}, opts...)...)
}
