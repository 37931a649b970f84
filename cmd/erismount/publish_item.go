package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"erismount/cache"
	"erismount/eris"
	"erismount/erisfs"
	"erismount/fetcher"
	"erismount/narinfo"
	"erismount/narinfo/publish"
)

// publishItemHelp is the part of publish's help about store items.
const publishItemHelp = `
Store items: with --store-path, --narinfo-dir, --key or --nix-key, publish
publishes store items and writes their signed narinfos. Each item is read from
its store path on disk (give the store paths as arguments, or as --store-path
without arguments), or from DIR / --nar FILE for a single --store-path. Its nar
is hashed (NarHash, NarSize) while the same stream is encoded; the tree is then
read back from where the blocks went and must serialize to that NarHash before
the narinfo advertises it: the narinfo gets "ERIS: urn:eris:…" above the
signature, signed with --key (a Guix signing-key.sec) and/or --nix-key (a Nix
secret key, Sig: over Nix's fingerprint). Items ERIS-FS cannot represent (an
empty directory below the root; in a nar, a name that is not UTF-8 — such a
directory on disk cannot be read at all) still get a signed narinfo, without
ERIS, and are reported on stderr. Narinfos go to --narinfo-dir
as <hash>.narinfo (the layout substitute-server serves), or to stdout.
References and deriver come from --references / --deriver or, by default, from
the store: "nix-store -q" for /nix/store, "guix gc" otherwise.
With --peer, blocks are PUT to the peers (erismount serve --allow-put) instead
of the store.
` + publishStaticHelp

// itemFlags are publish's flags for store items.
type itemFlags struct {
	storePaths  []string
	narinfoDir  string
	key, nixKey string
	host        string
	references  string
	deriver     string
	system      string
	concurrency int
	static      staticFlags // publish_static.go
}

func addItemFlags(cmd *cobra.Command) *itemFlags {
	f := &itemFlags{}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.storePaths, "store-path", nil, "store path of the item (repeatable; with DIR or --nar: the one item's)")
	fl.StringVar(&f.narinfoDir, "narinfo-dir", "", "write each narinfo here as <hash>.narinfo (default: print them)")
	fl.StringVar(&f.key, "key", "", "Guix secret key (signing-key.sec) to sign narinfos with")
	fl.StringVar(&f.nixKey, "nix-key", "", "Nix secret key file to sign narinfos with (Sig:)")
	fl.StringVar(&f.host, "host", "", "host part of the Guix Signature field (default: the host name)")
	fl.StringVar(&f.references, "references", "", `references of the single item: store paths or base names, comma or space separated, "none" for none (default: asked of the store)`)
	fl.StringVar(&f.deriver, "deriver", "", `deriver of the single item, "none" for none (default: asked of the store, none with --references)`)
	fl.StringVar(&f.system, "system", "", "System field of the narinfos (e.g. x86_64-linux)")
	fl.IntVar(&f.concurrency, "jobs", 2, "items published at once")
	f.static.add(fl)
	return f
}

// active reports whether publish is publishing store items.
func (f *itemFlags) active() bool {
	return len(f.storePaths) > 0 || f.narinfoDir != "" || f.key != "" || f.nixKey != ""
}

// items turns the arguments into the items to publish.
func (f *itemFlags) items(args []string, narPath string, stdin io.Reader) ([]publish.Item, func(), error) {
	noop := func() {}
	switch {
	case narPath != "" || len(f.storePaths) > 0 && len(args) > 0:
		if len(f.storePaths) != 1 || len(args) > 1 || narPath != "" && len(args) > 0 {
			return nil, noop, usageError{errors.New("with DIR or --nar, give exactly one --store-path and one DIR or --nar FILE")}
		}
		it := publish.Item{StorePath: f.storePaths[0]}
		if narPath == "" {
			it.Path = args[0]
			return []publish.Item{it}, noop, nil
		}
		if narPath == "-" {
			it.Nar = stdin
			return []publish.Item{it}, noop, nil
		}
		file, err := os.Open(narPath)
		if err != nil {
			return nil, noop, usageError{err}
		}
		it.Nar = file
		return []publish.Item{it}, func() { file.Close() }, nil
	case len(f.storePaths) > 0:
		args = f.storePaths
	}
	if len(args) == 0 {
		return nil, noop, usageError{errors.New("no store item: give store paths as arguments or --store-path")}
	}
	var its []publish.Item
	for _, p := range args {
		its = append(its, publish.Item{StorePath: strings.TrimSuffix(p, "/")})
	}
	return its, noop, nil
}

// publishItems publishes store items and writes or prints their narinfos.
func (a *app) publishItems(ctx context.Context, f *itemFlags, args []string, narPath string, eo erisfs.EncodeOptions) (err error) {
	opts := publish.Options{Host: f.host, Encode: eo, Concurrency: f.concurrency, Logger: a.log}
	if err := f.static.options(f.narinfoDir, &opts); err != nil {
		return err
	}
	if err := a.readSigningKeys(f.key, f.nixKey, &opts.Key, &opts.NixKey); err != nil {
		return err
	}
	if opts.Key == nil && opts.NixKey == nil {
		return usageError{errors.New("store items need a signing key: --key and/or --nix-key")}
	}
	if opts.Host == "" {
		opts.Host, _ = os.Hostname()
	}
	if f.narinfoDir != "" {
		fi, err := os.Stat(f.narinfoDir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Narinfos are public: a missing directory is made as
			// mkdir -p would.
			if err := os.MkdirAll(f.narinfoDir, 0o755); err != nil {
				return fmt.Errorf("--narinfo-dir: %w", err)
			}
		case err != nil || !fi.IsDir():
			return usageError{fmt.Errorf("--narinfo-dir %s: not a directory (%v)", f.narinfoDir, err)}
		}
	}
	its, closeItems, err := f.items(args, narPath, a.stdin)
	if err != nil {
		return err
	}
	defer closeItems()
	if len(its) > 1 && (f.references != "" || f.deriver != "") {
		return usageError{errors.New("--references and --deriver are for a single item")}
	}
	for i := range its {
		it := &its[i]
		it.System = f.system
		dir, _, err := narinfo.SplitStorePath(it.StorePath)
		if err != nil {
			return usageError{err}
		}
		if it.References, err = listOrAsk(ctx, f.references, dir, it.StorePath, "--references"); err != nil {
			return err
		}
		deriver := f.deriver
		if deriver == "" && f.references != "" {
			deriver = "none" // the store was not asked: the item may not be there
		}
		derivers, err := listOrAsk(ctx, deriver, dir, it.StorePath, "--deriver")
		if err != nil {
			return err
		}
		if len(derivers) > 0 {
			it.Deriver = derivers[0]
		}
	}

	store, local, closeStore, err := a.publishTarget(ctx, f.static.blocksDir)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeStore()) }()
	if bar := a.countBar(int64(len(its)), "publish"); bar != nil {
		opts.Done = func(publish.Result) { bar.Add(1) }
		defer bar.Clear()
	}
	var added *undoPutter
	if local != nil {
		added = &undoPutter{store: local}
		store = undoStore{local, added}
	}
	results, err := publish.Items(ctx, its, store, opts)
	if err != nil {
		// Nothing is pinned or reported: take back the blocks added.
		if added != nil {
			if uerr := added.undo(context.WithoutCancel(ctx)); uerr != nil {
				a.log.Warn("removing the blocks of a failed publish", "err", uerr)
			}
		}
		return err
	}
	if fl, ok := store.(interface{ Flush(context.Context) error }); ok {
		if err := fl.Flush(ctx); err != nil { // before a narinfo names the blocks
			return err
		}
	}
	if f.static.narDir != "" && f.narinfoDir != "" {
		dir, _, _ := narinfo.SplitStorePath(its[0].StorePath)
		if err := publish.WriteCacheInfo(f.narinfoDir, dir); err != nil {
			return err
		}
	}
	return a.reportItems(ctx, results, f.narinfoDir, local)
}

// undoStore reads from a store and writes to it through an undoPutter.
type undoStore struct {
	eris.BlockGetter
	*undoPutter
}

// reportItems pins what went to the local store, writes or prints the
// narinfos, and says which items have no ERIS field.
func (a *app) reportItems(ctx context.Context, results []publish.Result, narinfoDir string, local *cache.SQLite) error {
	var records []map[string]any
	for _, r := range results {
		rec := map[string]any{"store_path": r.StorePath, "nar_hash": r.Info.NarHash.String(), "nar_size": r.Info.NarSize, "nars": []string{}}
		if r.NoERIS == nil {
			rec["eris"] = r.Info.ERIS.URN()
			if local != nil {
				if err := pinTree(ctx, local, r.Info.ERIS); err != nil {
					return err
				}
			}
		} else {
			rec["no_eris"] = r.NoERIS.Error()
			fmt.Fprintf(a.stderr, "erismount: %s: published without ERIS: %v\n", r.StorePath, r.NoERIS)
		}
		if !r.Info.ERISNar.IsZero() {
			rec["eris_nar"] = r.Info.ERISNar.String()
		}
		for _, f := range r.Nars {
			rec["nars"] = append(rec["nars"].([]string), f.Path)
		}
		if narinfoDir != "" {
			path, err := publish.WriteNarinfo(narinfoDir, r)
			if err != nil {
				return err
			}
			rec["narinfo"] = path
		} else {
			rec["narinfo"] = string(r.Narinfo)
		}
		records = append(records, rec)
	}
	if a.json {
		return a.printJSON(records)
	}
	for i, r := range results {
		switch {
		case narinfoDir == "":
			if i > 0 {
				fmt.Fprintln(a.stdout)
			}
			a.stdout.Write(r.Narinfo)
		case r.NoERIS != nil:
			fmt.Fprintf(a.stdout, "%s -\n", r.StorePath)
		default:
			fmt.Fprintf(a.stdout, "%s %s\n", r.StorePath, r.Info.ERIS.URN())
		}
	}
	return nil
}

// publishTarget is where published blocks go: the --peer peers and the
// --blocks-dir directory (each block stored in all, read back from the
// first), or else the local store (then returned as local, for pinning).
func (a *app) publishTarget(ctx context.Context, blocksDir string) (eris.BlockStore, *cache.SQLite, func() error, error) {
	var dir eris.BlockStore
	if blocksDir != "" {
		bd, err := (&staticFlags{blocksDir: blocksDir}).blockDir()
		if err != nil {
			return nil, nil, nil, err
		}
		if len(a.peers) == 0 {
			return bd, nil, func() error { return nil }, nil
		}
		dir = bd
	}
	if len(a.peers) == 0 {
		s, local, err := a.openContent(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		return s, local, s.Close, nil
	}
	var peers peerSet
	for _, u := range a.peers {
		p, err := a.dialPeer(ctx, u)
		if err != nil {
			peers.Close()
			return nil, nil, nil, usageError{fmt.Errorf("--peer %s: %w", u, err)}
		}
		peers = append(peers, p)
	}
	if dir != nil {
		return teeStore{peers, dir}, nil, peers.Close, nil
	}
	return peers, nil, peers.Close, nil
}

// peerSet stores every block on all its peers and reads from the first.
type peerSet []fetcher.Peer

func (ps peerSet) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	return ps[0].GetBlock(ctx, ref)
}

func (ps peerSet) PutBlock(ctx context.Context, ref eris.Ref, block []byte) error {
	for _, p := range ps {
		if err := putRetry(ctx, p, ref, block); err != nil {
			return err
		}
	}
	return nil
}

// putRetry PUTs a block, again after a pause while the peer answers
// "service unavailable" (CoAP 5.03, HTTP 503: too many uploads at once),
// for up to a minute.
func putRetry(ctx context.Context, p fetcher.Peer, ref eris.Ref, block []byte) error {
	pause := 20 * time.Millisecond
	end := time.Now().Add(time.Minute)
	for {
		err := p.PutBlock(ctx, ref, block)
		var se *fetcher.StatusError
		if !errors.As(err, &se) || !strings.HasPrefix(se.Code, "5.03") && !strings.HasPrefix(se.Code, "503") || time.Now().After(end) {
			return err
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return err
		}
		pause = min(2*pause, time.Second)
	}
}

func (ps peerSet) Close() error {
	var err error
	for _, p := range ps {
		err = errors.Join(err, p.Close())
	}
	return err
}

// listOrAsk returns the store paths flag lists (comma or space separated;
// "none" for none), or, when it is empty, asks the store what it knows of
// path: `nix-store -q --references|--deriver` for /nix/store, `guix gc
// --references|--derivers` for any other store.
func listOrAsk(ctx context.Context, flag, storeDir, path, name string) ([]string, error) {
	switch flag {
	case "none":
		return nil, nil
	case "":
	default:
		return strings.FieldsFunc(flag, func(r rune) bool { return r == ',' || r == ' ' }), nil
	}
	var cmd *exec.Cmd
	switch {
	case storeDir == "/nix/store" && name == "--references":
		cmd = exec.CommandContext(ctx, "nix-store", "--query", "--references", path)
	case storeDir == "/nix/store":
		cmd = exec.CommandContext(ctx, "nix-store", "--query", "--deriver", path)
	case name == "--references":
		cmd = exec.CommandContext(ctx, "guix", "gc", "--references", path)
	default:
		cmd = exec.CommandContext(ctx, "guix", "gc", "--derivers", path)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, usageError{fmt.Errorf("%s of %s: %s: %v %s(give %s, or \"none\")",
			strings.TrimPrefix(name, "--"), path, strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String())+" ", name)}
	}
	var paths []string
	for _, l := range strings.Fields(string(out)) {
		if l != "unknown-deriver" { // what nix-store prints for none
			paths = append(paths, l)
		}
	}
	return paths, nil
}
