package narsource

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"erismount/narinfo"
	"erismount/narinfo/compress"
)

// Kind names a source of nars.
type Kind string

// The sources, as named in logs, metrics and --nar-source.
const (
	Tree     Kind = "tree"
	ERISNar  Kind = "eris-nar"
	Upstream Kind = "upstream"
)

// Kinds lists every Kind.
func Kinds() []Kind { return []Kind{Tree, ERISNar, Upstream} }

// ParseKind parses a Kind; "" and "auto" give "" (choose).
func ParseKind(s string) (Kind, error) {
	switch s {
	case "", "auto":
		return "", nil
	case string(Tree), string(ERISNar), string(Upstream):
		return Kind(s), nil
	}
	return "", fmt.Errorf("nar source %q: want auto, tree, eris-nar or upstream", s)
}

// Facts are what the choice weighs for one item.
type Facts struct {
	// NarSize is the signed size of the nar.
	NarSize int64
	// Tree says whether the item has an ERIS-FS tree; TreeBytes is the
	// bytes of all its blocks and TreeHeld those held locally (exact when
	// TreeExact, else TreeBytes is an estimate from NarSize and TreeHeld 0).
	Tree                bool
	TreeBytes, TreeHeld int64
	TreeExact           bool
	// ERISNar says whether the compressed nar is ERIS content;
	// ERISNarBytes is the bytes of its blocks (estimated from the
	// location of the same compression, else NarSize), ERISNarHeld those
	// held.
	ERISNar                   bool
	ERISNarBytes, ERISNarHeld int64
	// Locations are the narinfo's, with absolute URLs.
	Locations []narinfo.Location
	// Failed are sources that failed for this item recently.
	Failed map[Kind]bool
}

// Option is one way to get the nar.
type Option struct {
	Kind     Kind
	Location int   // for Upstream: the index in Facts.Locations
	Cost     int64 // bytes to move over the network, estimated
}

func (o Option) String() string {
	if o.Kind == Upstream {
		return fmt.Sprintf("%s[%d] (%d bytes)", o.Kind, o.Location, o.Cost)
	}
	return fmt.Sprintf("%s (%d bytes)", o.Kind, o.Cost)
}

// usableCompression reports whether a location's Compression can be read.
func usableCompression(c string) bool {
	return c == "" || slices.Contains(compress.Methods(), c)
}

// Choose returns the ways to get the nar, cheapest first; with force set,
// only that kind. Ties go to the ERIS sources, which load no upstream
// server, the tree first (its blocks are shared with other versions of
// the item). Sources in f.Failed go last, in the same order.
func Choose(f Facts, force Kind) []Option {
	var opts []Option
	if f.Tree {
		opts = append(opts, Option{Kind: Tree, Cost: max(0, f.TreeBytes-f.TreeHeld)})
	}
	if f.ERISNar {
		opts = append(opts, Option{Kind: ERISNar, Cost: max(0, f.ERISNarBytes-f.ERISNarHeld)})
	}
	for i, l := range f.Locations {
		if !usableCompression(l.Compression) {
			continue
		}
		opts = append(opts, Option{Kind: Upstream, Location: i, Cost: locationCost(l, f.NarSize)})
	}
	if force != "" {
		opts = slices.DeleteFunc(opts, func(o Option) bool { return o.Kind != force })
	}
	rank := map[Kind]int{Tree: 0, ERISNar: 1, Upstream: 2}
	slices.SortStableFunc(opts, func(a, b Option) int {
		if fa, fb := f.Failed[a.Kind], f.Failed[b.Kind]; fa != fb {
			if fa {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.Cost, b.Cost), cmp.Compare(rank[a.Kind], rank[b.Kind]))
	})
	return opts
}

// locationCost is a location's FileSize, or NarSize when it is not
// stated; nothing for a local file.
func locationCost(l narinfo.Location, narSize int64) int64 {
	if strings.HasPrefix(l.URL, "file:") {
		return 0
	}
	if l.FileSize > 0 {
		return l.FileSize
	}
	return narSize
}

// Possible returns the sources of n's nar by what the narinfo says alone,
// nothing counted: empty when no source could produce it.
func (c *Chooser) Possible(n *narinfo.Narinfo, x Extra) []Option {
	f := Facts{NarSize: n.NarSize, Locations: n.Locations}
	_, err := n.Capability()
	f.Tree = err == nil && c.opts.Blocks != nil
	f.ERISNar = !x.ERISNar.IsZero() && c.opts.Blocks != nil && usableCompression(x.ERISNarCompression)
	return Choose(f, c.opts.Force)
}
