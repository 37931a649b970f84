package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"erismount/narinfo"
	"erismount/narinfo/narsource"
	narinfosource "erismount/narinfo/source"
)

// upstreamCopyIn are copy-in's flags for --upstream.
type upstreamCopyIn struct {
	urls, nixKeys      []string
	narSource, aclPath string
	aclGiven           bool
	storeDir           string
}

var errCopyInStopped = errors.New("copy-in stopped")

// copyInUpstream copies storePath in: its narinfo from the upstreams, its
// nar from the cheapest source.
func (a *app) copyInUpstream(ctx context.Context, storePath string, up upstreamCopyIn) error {
	dir, base, err := narinfo.SplitStorePath(storePath)
	if err != nil {
		return usageError{err}
	}
	force, err := narsource.ParseKind(up.narSource)
	if err != nil {
		return usageError{fmt.Errorf("--nar-source: %w", err)}
	}
	var trust narinfosource.Trust
	if _, err := os.Stat(up.aclPath); up.aclGiven || err == nil {
		if trust.ACL, err = readACL(up.aclPath); err != nil {
			return err
		}
	}
	for _, s := range up.nixKeys {
		k, err := narinfo.ParseNixPublicKey(s)
		if err != nil {
			return usageError{fmt.Errorf("--trusted-nix-key: %w", err)}
		}
		trust.NixKeys = append(trust.NixKeys, k)
	}
	if trust.IsZero() {
		return usageError{errors.New("--upstream: say whose signatures to trust with --acl or --trusted-nix-key")}
	}
	client := narinfosource.NewClient()
	var look narinfosource.Chain
	for _, u := range up.urls {
		h, err := narinfosource.NewHTTP(u, narinfosource.Options{StoreDir: dir, Trust: trust, Client: client})
		if err != nil {
			return usageError{fmt.Errorf("--upstream: %w", err)}
		}
		look = append(look, h)
	}
	n, err := look.Narinfo(ctx, base[:32])
	if err != nil {
		return err
	}
	if n.StorePath != storePath {
		return fmt.Errorf("copy-in: the upstream narinfo of %s is for %s", storePath, n.StorePath)
	}
	storeDir := up.storeDir
	if storeDir == "" {
		storeDir = dir
	}
	blocks, err := a.openSource(ctx)
	if err != nil {
		return err
	}
	defer blocks.Close()
	nopts := narsource.Options{Client: client, Force: force, Logger: a.log}
	a.narSources(blocks, &nopts)
	chooser := narsource.New(nopts)

	opts := narinfo.CopyInOptions{Logger: a.log}
	bar := a.progressBar(n.NarSize, "copy-in "+n.BaseName())
	if bar != nil {
		opts.Progress = func(done int64) { bar.Set64(done) }
	}
	// The chosen source writes the nar, checked, into a pipe that CopyInNar
	// reads and writes out, checking again what it writes.
	pr, pw := io.Pipe()
	type written struct {
		res narsource.Result
		err error
	}
	done := make(chan written, 1)
	go func() {
		res, err := chooser.Write(ctx, pw, n)
		pw.CloseWithError(err)
		done <- written{res, err}
	}()
	err = narinfo.CopyInNar(ctx, pr, storeDir, n.StorePath, n.Sum(), opts)
	pr.CloseWithError(errCopyInStopped) // the source stops too
	w := <-done
	if bar != nil {
		bar.Clear()
	}
	if w.err != nil && !errors.Is(w.err, errCopyInStopped) {
		err = w.err // the source's failure says more than the truncated nar
	}
	if err != nil {
		return err
	}
	a.log.Info("copy-in nar", "path", n.StorePath, "source", w.res.Kind, "url", w.res.URL, "bytes", w.res.Sent, "moved", w.res.Moved, "fallbacks", len(w.res.Attempts))
	final := filepath.Join(storeDir, n.BaseName())
	if a.json {
		return a.printJSON(map[string]any{"path": final, "nar_hash": n.NarHash.String(), "nar_size": n.NarSize,
			"source": string(w.res.Kind), "moved": w.res.Moved})
	}
	fmt.Fprintln(a.stdout, final)
	return nil
}
