package eris

import "context"

// Walk visits the reference of every block of rc's tree, depth first, left
// to right: internal nodes are fetched from g and verified to find their
// children, leaves are visited by reference only (not fetched). It is how
// `pin` and `status` learn which blocks make up a capability. A visit error
// stops the walk and is returned.
func Walk(ctx context.Context, rc ReadCapability, g BlockGetter, visit func(ref Ref, level int) error) error {
	r, err := NewReader(ctx, rc, g)
	if err != nil {
		return err
	}
	return r.walk(ctx, pair{ref: rc.Root(), key: rc.RootKey()}, rc.Level(), visit)
}

// Walk is the package's Walk over the reader's content, its internal nodes
// fetched through the reader's node cache and checked as its reads check
// them (ReaderOptions): a reader sharing a tree's node cache walks what
// was walked or read before without fetching it again.
func (r *Reader) Walk(ctx context.Context, visit func(ref Ref, level int) error) error {
	return r.walk(ctx, pair{ref: r.rc.Root(), key: r.rc.RootKey()}, r.rc.Level(), visit)
}

func (r *Reader) walk(ctx context.Context, p pair, level int, visit func(Ref, int) error) error {
	if err := visit(p.ref, level); err != nil {
		return err
	}
	if level == 0 {
		return nil
	}
	node, err := r.fetch(ctx, p, level)
	if err != nil {
		return err
	}
	for i := range children(node) {
		var c pair
		c.set(node[i*64:])
		if err := r.walk(ctx, c, level-1, visit); err != nil {
			return err
		}
	}
	return nil
}
