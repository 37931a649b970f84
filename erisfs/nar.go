package erisfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sync/errgroup"

	"erismount/eris"
	"erismount/narinfo/nar"
)

// smallFile is the size up to which a nar's file is read into memory and
// encoded beside the next ones; larger files are encoded as they stream by,
// by eris.Encode's own workers. It is one batch of the eris encoder.
const smallFile = 256 << 10

// EncodeNar encodes the store item serialized as a nar in r, reading the
// stream once and unpacking nothing to disk. The nar is checked as it is
// read (package narinfo/nar refuses anything but a canonical nar); a
// file's content goes straight into eris.Encode, small files several at
// once. A nar whose root is a file or symlink makes a single-file tree;
// what ERIS-FS cannot hold (an empty directory, a name that is not UTF-8)
// is refused or dropped as for EncodeDir.
//
// The tree has the same URN as EncodeDir of the unpacked item. Whether
// the tree serializes back to the same nar (it does not when something was
// dropped) is for the caller to check, e.g. with nar.WriteFS of Tree.FS.
func EncodeNar(ctx context.Context, r io.Reader, p eris.BlockPutter, opts EncodeOptions) (eris.ReadCapability, EncodeStats, error) {
	e, err := newEncoder(p, opts)
	if err != nil {
		return eris.ReadCapability{}, EncodeStats{}, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.opts.Concurrency)
	err = e.walkNar(gctx, nar.NewReader(r), g)
	// A failed encoding (a store error, say) cancels the walk: report
	// the failure, not the walk's "context canceled".
	if werr := g.Wait(); err == nil || (werr != nil && errors.Is(err, context.Canceled) && ctx.Err() == nil) {
		err = werr
	}
	if err != nil {
		return eris.ReadCapability{}, EncodeStats{}, err
	}
	return e.finish(ctx)
}

// narDir is a directory of the nar whose entries are being read.
type narDir struct {
	comps []string
	kept  int // entries that made it into the tree
}

func (e *encoder) walkNar(ctx context.Context, nr *nar.Reader, g *errgroup.Group) error {
	var stack []*narDir
	var skip string // path prefix of a dropped directory: its entries go too
	skipping := false
	// closeDir ends the directory on top of the stack: an empty one is not
	// representable, unless it is the root.
	closeDir := func() error {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		path := joinPath(d.comps)
		if d.kept == 0 && len(d.comps) > 0 {
			return e.reject(path, "empty directory")
		}
		if err := e.count(path); err != nil {
			return err
		}
		e.stats.Directories++
		if len(stack) > 0 {
			stack[len(stack)-1].kept++
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("erisfs: encode nar: %w", err)
		}
		if skipping && strings.HasPrefix(h.Path, skip) {
			continue
		}
		skipping = false
		var comps []string
		if h.Path != "" {
			comps = strings.Split(h.Path, "/")
		}
		// The nar lists a directory before its entries, depth first: the
		// directories not holding this node are complete.
		for len(stack) > 0 && !isParent(stack[len(stack)-1].comps, comps) {
			if err := closeDir(); err != nil {
				return err
			}
		}
		if len(comps) > 0 && (len(stack) == 0 || len(stack[len(stack)-1].comps) != len(comps)-1) {
			return fmt.Errorf("erisfs: encode nar: %s outside the directory being read", displayPath(h.Path))
		}
		ok, err := e.checkPath(comps)
		if err != nil {
			return err
		}
		if !ok {
			skip, skipping = h.Path+"/", true
			continue
		}
		switch h.Type {
		case nar.Directory:
			stack = append(stack, &narDir{comps: comps})
			continue
		case nar.Symlink:
			ok, err = e.addSymlink(comps, h.LinkTarget)
		case nar.Regular, nar.Executable:
			ok, err = true, e.addNarFile(ctx, nr, h, comps, g)
		default:
			return fmt.Errorf("erisfs: encode nar: %s: unknown node type %v", displayPath(h.Path), h.Type)
		}
		if err != nil {
			return err
		}
		if ok && len(stack) > 0 {
			stack[len(stack)-1].kept++
		}
	}
	for len(stack) > 0 {
		if err := closeDir(); err != nil {
			return err
		}
	}
	return nil
}

// isParent reports whether dir holds comps (directly or deeper).
func isParent(dir, comps []string) bool {
	if len(dir) >= len(comps) {
		return false
	}
	for i := range dir {
		if dir[i] != comps[i] {
			return false
		}
	}
	return true
}

// addNarFile encodes the current file of nr: a small one from a copy, in
// the background; a large one here, as it streams.
func (e *encoder) addNarFile(ctx context.Context, nr *nar.Reader, h *nar.Header, comps []string, g *errgroup.Group) error {
	if err := e.count(h.Path); err != nil {
		return err
	}
	kind := Regular
	if h.Type == nar.Executable {
		kind = Executable
	}
	j := &fileJob{name: h.Path, kind: kind, paths: [][]string{comps}}
	e.jobs = append(e.jobs, j)
	if h.Size > smallFile {
		return e.encodeContent(ctx, nr, j, h.Size)
	}
	buf := make([]byte, h.Size)
	if _, err := io.ReadFull(nr, buf); err != nil {
		return fmt.Errorf("erisfs: encode nar: %s: %w", displayPath(h.Path), err)
	}
	g.Go(func() error { return e.encodeContent(ctx, bytes.NewReader(buf), j, h.Size) })
	return nil
}
