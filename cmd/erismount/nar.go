package main

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"erismount/erisfs"
	"erismount/narinfo/nar"
)

func newNarCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nar",
		Short: "Serialize a directory or an ERIS-FS tree as a Nix archive (nar), or hash it",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "dump DIR|URN",
		Short: "Write the nar of DIR (as nix-store --dump) or of an ERIS-FS tree to stdout",
		Long: `Write the nar of DIR, or of the ERIS-FS tree a urn:eris: capability names
(blocks from the store and peers, each verified), to stdout — byte-identical to
"nix-store --dump". Symlinks are never followed; DIR may be a file or a symlink.`,
		Example: `  erismount nar dump /gnu/store/…-hello-2.12 > hello.nar
  erismount nar dump urn:eris:B4A… --peer coap://127.0.0.1:5683 | nix-store --restore out`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withTree(cmd.Context(), args[0], func(fsys fs.FS) error {
				w := bufio.NewWriterSize(a.stdout, 256<<10)
				if err := nar.WriteFS(cmd.Context(), w, fsys); err != nil {
					return err
				}
				return w.Flush()
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "hash DIR|URN",
		Short: "Print the NarHash (sha256:<nix-base32>) and NarSize of DIR or of an ERIS-FS tree",
		Long: `Print "sha256:<nix-base32> <size>": the NarHash and NarSize a narinfo states
for DIR (the hash "nix-hash --type sha256 --base32 DIR" prints), or for the
ERIS-FS tree a urn:eris: capability names.`,
		Example: `  erismount nar hash /gnu/store/…-hello-2.12
  erismount --json nar hash urn:eris:B4A…`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withTree(cmd.Context(), args[0], func(fsys fs.FS) error {
				hw := nar.NewHashingWriter(nil)
				if err := nar.WriteFS(cmd.Context(), hw, fsys); err != nil {
					return err
				}
				sum := hw.Sum()
				if a.json {
					return a.printJSON(map[string]any{"nar_hash": sum.Hash.String(), "nar_size": sum.Size})
				}
				_, err := fmt.Fprintf(a.stdout, "%s %d\n", sum.Hash, sum.Size)
				return err
			})
		},
	})
	return cmd
}

// withTree calls f with the tree arg names: a urn:eris: capability (opened
// through the store and peers) or a path on disk (never following
// symlinks).
func (a *app) withTree(ctx context.Context, arg string, f func(fs.FS) error) error {
	if !strings.HasPrefix(strings.ToLower(arg), "urn:") {
		if _, err := os.Lstat(arg); err != nil {
			return usageError{err}
		}
		return f(nar.DirFS(arg))
	}
	rc, src, err := a.openURN(ctx, arg)
	if err != nil {
		return err
	}
	defer src.Close()
	tree, err := erisfs.Open(ctx, rc, src, erisfs.OpenOptions{GetterVerifies: true})
	if err != nil {
		return err
	}
	return f(tree.FS(ctx))
}
