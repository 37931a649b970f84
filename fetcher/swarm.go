package fetcher

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"erismount/eris"
)

// A swarm is the nodes on one link that found each other (Discover) and
// serve what they hold (NewReadOnlyServer). So that a tree several of them
// read at once leaves its publisher about once, every block has an owner
// among them: the node of the highest rendezvous score for the block
// (highest random weight), computed by every node alike from the node ids
// the nodes advertise. A node asks a block's owner first, which fetches a
// block it lacks through its own peers (Relay) while the others wait for
// it; then its other neighbours; its configured peers (publishers) last.
//
// A node relays only on its store's resource, never on its held resource
// (<store>/held/blocks, see HeldPath), and asks its neighbours on their
// held resource when it relays: a relayed request goes one hop, so no
// loop can form between nodes whose views of the swarm differ.

// NodeID names a node of a swarm. The zero value is no node.
type NodeID [8]byte

// NewNodeID returns a random node id.
func NewNodeID() NodeID {
	var id NodeID
	for id.IsZero() {
		_, _ = rand.Read(id[:])
	}
	return id
}

// ParseNodeID reads the 16 hexadecimal digits String writes.
func ParseNodeID(s string) (NodeID, error) {
	var id NodeID
	if len(s) != 2*len(id) {
		return NodeID{}, fmt.Errorf("fetcher: node id %q: want %d hexadecimal digits", s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return NodeID{}, fmt.Errorf("fetcher: node id %q: %w", s, err)
	}
	if id.IsZero() {
		return NodeID{}, fmt.Errorf("fetcher: node id %q: zero is no node", s)
	}
	return id, nil
}

func (id NodeID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is no node.
func (id NodeID) IsZero() bool { return id == NodeID{} }

// score is the rendezvous score of a block at a node; the owner of a block
// is the node of the highest score. A reference is a hash, so its first
// eight bytes are uniform already; splitmix64's finalizer mixes them with
// the node id so that each node's scores are independent of another's.
func (id NodeID) score(ref eris.Ref) uint64 {
	return mix64(binary.LittleEndian.Uint64(ref[:8]) ^ mix64(binary.LittleEndian.Uint64(id[:])))
}

// mix64 is the finalizer of splitmix64.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// HeldPath is appended to a store's path for its held resource: the
// blocks the node holds, never fetched from its peers.
const HeldPath = "/held"

// noRelayKey marks a context as a relayed request.
type noRelayKey struct{}

// NoRelay marks ctx as a request that must not be relayed: a Relay
// answers it from what it holds, and a neighbour (DialNeighbour) is asked
// on its held resource. A node relaying a request marks its own fetch.
func NoRelay(ctx context.Context) context.Context {
	return context.WithValue(ctx, noRelayKey{}, true)
}

// IsNoRelay reports whether ctx was marked by NoRelay.
func IsNoRelay(ctx context.Context) bool {
	b, _ := ctx.Value(noRelayKey{}).(bool)
	return b
}

// neighbourPeer is a node of the swarm: its store, and its held resource
// for the requests this node relays.
type neighbourPeer struct {
	Peer
	held Peer
}

// DialNeighbour returns a Peer for the store of a discovered node at
// rawURL (CoAP): requests marked NoRelay go to its held resource, the
// others to its store, which may relay the blocks the node owns.
func DialNeighbour(ctx context.Context, rawURL string, opts ClientOptions) (Peer, error) {
	ep, err := parseEndpoint(rawURL)
	if err != nil {
		return nil, err
	}
	if ep.transport == transportHTTP || ep.transport == transportUnix {
		return nil, fmt.Errorf("%w %q: a neighbour is a CoAP store over UDP or TCP", ErrBadURL, rawURL)
	}
	p, err := Dial(ctx, rawURL, opts)
	if err != nil {
		return nil, err
	}
	held := ep
	held.path += HeldPath
	h, err := Dial(ctx, held.String(), opts)
	if err != nil {
		p.Close()
		return nil, err
	}
	return &neighbourPeer{Peer: p, held: h}, nil
}

func (*neighbourPeer) verifiesBlocks() {} // both are peers Dial returns

func (n *neighbourPeer) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	if IsNoRelay(ctx) {
		return n.held.GetBlock(ctx, ref)
	}
	return n.Peer.GetBlock(ctx, ref)
}

func (n *neighbourPeer) Close() error {
	return errors.Join(n.Peer.Close(), n.held.Close())
}

// Relay is what a node of a swarm serves: the blocks it holds (Local), and
// a block it lacks fetched through its peers (Remote, which keeps it) when
// Owns says the block is this node's to fetch and the request was not
// relayed already (NoRelay). Relay marks its fetch NoRelay, so the
// neighbours it asks answer from what they hold.
//
// With Owns nil every missing block is relayed (but never a relayed
// request); with Remote nil none is.
type Relay struct {
	Local  eris.BlockGetter
	Remote eris.BlockGetter
	Owns   func(eris.Ref) bool
}

// GetBlock implements eris.BlockGetter.
func (r *Relay) GetBlock(ctx context.Context, ref eris.Ref) ([]byte, error) {
	b, err := r.Local.GetBlock(ctx, ref)
	if err == nil || !errors.Is(err, eris.ErrNotFound) || r.Remote == nil || IsNoRelay(ctx) {
		return b, err
	}
	if r.Owns != nil && !r.Owns(ref) {
		return nil, err
	}
	return r.Remote.GetBlock(NoRelay(ctx), ref)
}
