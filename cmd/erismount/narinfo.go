package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"erismount/narinfo"
)

// defaultACL is where Guix keeps the keys it trusts for substitutes.
const defaultACL = "/etc/guix/acl"

// verifyFailed makes a failed verification exit with exitCorrupt.
type verifyFailed struct{ error }

func (e verifyFailed) ExitCode() int { return exitCorrupt }
func (e verifyFailed) Unwrap() error { return e.error }

func newNarinfoCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "narinfo",
		Short: "Verify narinfos and make signing keys (Guix and Nix formats)",
	}
	cmd.AddCommand(newNarinfoVerifyCmd(a), newNarinfoKeygenCmd(a))
	return cmd
}

func newNarinfoVerifyCmd(a *app) *cobra.Command {
	var aclPath string
	var nixKeys []string
	cmd := &cobra.Command{
		Use:   "verify [--acl FILE | --nix-key NAME:KEY…] FILE",
		Short: "Check a narinfo's signature and print the outcome (exit 0 only when valid)",
		Long: `Check the Guix signature of a narinfo (FILE, or - for stdin) against an ACL in
Guix's format and print the outcome Guix would reach: valid, unsigned, corrupt
signature, unauthorized key, hash mismatch or invalid signature. With --nix-key,
check its Nix Sig fields against those trusted public keys instead.

The narinfo is parsed strictly first: fields that must be signed (StorePath,
NarHash, NarSize, ERIS, References, Deriver) after the Signature line, two
different ERIS values and other malformations are rejected (exit 2).
Exit codes: 0 valid, 2 malformed narinfo or ACL, 4 not valid.`,
		Example: `  erismount narinfo verify --acl /etc/guix/acl hello.narinfo
  curl -s https://ci.guix.gnu.org/<hash>.narinfo | erismount narinfo verify -
  erismount narinfo verify --nix-key cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY= x.narinfo`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := a.readNarinfo(args[0])
			if err != nil {
				return err
			}
			if len(nixKeys) > 0 {
				var keys []narinfo.NixPublicKey
				for _, s := range nixKeys {
					k, err := narinfo.ParseNixPublicKey(s)
					if err != nil {
						return usageError{err}
					}
					keys = append(keys, k)
				}
				name, err := n.VerifyNix(keys)
				if err != nil {
					a.printOutcome(n, "invalid", err)
					return verifyFailed{err}
				}
				a.printOutcome(n, "valid", nil, "key", name)
				return nil
			}
			acl, err := readACL(aclPath)
			if err != nil {
				return err
			}
			outcome, err := n.Verify(acl)
			a.printOutcome(n, outcome.String(), err)
			return err // a *narinfo.VerifyError exits with 4
		},
	}
	cmd.Flags().StringVar(&aclPath, "acl", defaultACL, "ACL of authorized Guix signing keys")
	cmd.Flags().StringArrayVar(&nixKeys, "nix-key", nil, "trusted Nix public key NAME:BASE64 (repeatable); checks Sig fields instead of the Guix signature")
	return cmd
}

// printOutcome prints the verdict on stdout: one word (or the JSON
// record); the reason goes to stderr with the command's error.
func (a *app) printOutcome(n *narinfo.Narinfo, outcome string, reason error, extra ...string) {
	if !a.json {
		fmt.Fprintln(a.stdout, outcome)
		return
	}
	rec := map[string]any{"outcome": outcome, "store_path": n.StorePath, "nar_hash": n.NarHash.String(), "nar_size": n.NarSize}
	if !n.ERIS.IsZero() {
		rec["eris"] = n.ERIS.URN()
	}
	if reason != nil {
		rec["reason"] = reason.Error()
	}
	for i := 0; i+1 < len(extra); i += 2 {
		rec[extra[i]] = extra[i+1]
	}
	a.printJSON(rec)
}

// readNarinfo reads and parses a narinfo file ("-" is stdin); a malformed
// one is a usage error.
func (a *app) readNarinfo(path string) (*narinfo.Narinfo, error) {
	var raw []byte
	var err error
	if path == "-" {
		raw, err = io.ReadAll(io.LimitReader(a.stdin, narinfo.MaxSize+1))
	} else {
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, usageError{err}
	}
	n, err := narinfo.Parse(raw)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", path, err)}
	}
	return n, nil
}

func readACL(path string) (*narinfo.ACL, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("ACL: %w", err)}
	}
	acl, err := narinfo.ParseACL(text)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", path, err)}
	}
	return acl, nil
}

func newNarinfoKeygenCmd(a *app) *cobra.Command {
	var nixName string
	cmd := &cobra.Command{
		Use:   "keygen DIR",
		Short: "Generate a signing key pair: signing-key.pub and signing-key.sec as Guix writes them (or Nix's, with --nix NAME)",
		Long: `Generate a signing key pair in DIR, refusing to overwrite existing files.

By default the pair is a Guix key (ECDSA on Ed25519, as "guix archive
--generate-key" makes it): signing-key.pub and signing-key.sec, s-expressions
byte-compatible with Guix's; authorize the public key on a Guix machine with
"guix archive --authorize < signing-key.pub".

With --nix NAME the pair is a Nix binary-cache key (Ed25519), as
"nix-store --generate-binary-cache-key NAME" writes it: NAME.pub and NAME.sec.`,
		Example: `  erismount narinfo keygen /etc/erismount
  erismount narinfo keygen --nix cache.example.org-1 .`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			var pub, sec []byte
			pubName, secName := "signing-key.pub", "signing-key.sec"
			if nixName != "" {
				k, err := narinfo.GenerateNixKey(nixName, nil)
				if err != nil {
					return usageError{err}
				}
				pub, sec = []byte(k.Public().String()), []byte(k.String())
				pubName, secName = nixName+".pub", nixName+".sec"
			} else {
				k, err := narinfo.GenerateKey(nil)
				if err != nil {
					return err
				}
				pub, _ = k.Public().MarshalText()
				sec, _ = k.MarshalText()
			}
			// A missing directory is made private: it holds a secret key.
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			if err := writeNew(filepath.Join(dir, secName), sec, 0o600); err != nil {
				return err
			}
			if err := writeNew(filepath.Join(dir, pubName), pub, 0o644); err != nil {
				return errors.Join(err, os.Remove(filepath.Join(dir, secName)))
			}
			fmt.Fprintln(a.stdout, filepath.Join(dir, pubName))
			return nil
		},
	}
	cmd.Flags().StringVar(&nixName, "nix", "", "make a Nix binary-cache key with this name instead of a Guix key")
	return cmd
}

// writeNew creates path with data, failing if it exists.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
