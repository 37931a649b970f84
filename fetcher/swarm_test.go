package fetcher

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"erismount/eris"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

func TestParseNodeID(t *testing.T) {
	id := NewNodeID()
	for _, tc := range []struct {
		name, in string
		want     NodeID
		ok       bool
	}{
		{"round trip", id.String(), id, true},
		{"upper case", strings.ToUpper(id.String()), id, true},
		{"zero", "0000000000000000", NodeID{}, false},
		{"short", "abcdef", NodeID{}, false},
		{"long", id.String() + "00", NodeID{}, false},
		{"not hex", "zz" + id.String()[2:], NodeID{}, false},
		{"empty", "", NodeID{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseNodeID(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseNodeID(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

func FuzzParseNodeID(f *testing.F) {
	for _, s := range []string{"0123456789abcdef", "0000000000000000", "ABCDEF0123456789", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseNodeID(s)
		if err != nil {
			if !id.IsZero() {
				t.Fatalf("%q: error %v with id %v", s, err, id)
			}
			return
		}
		if id.IsZero() || !strings.EqualFold(id.String(), s) {
			t.Fatalf("%q parses to %v", s, id)
		}
	})
}

// FuzzDiscoveryAnswer feeds discovered any link-format payload in an
// answer to our request: it never panics, and a store it accepts has a
// CoAP URL on the answering address and a node id that is valid or none.
func FuzzDiscoveryAnswer(f *testing.F) {
	for _, s := range []string{
		`</.well-known/eris>;rt="eris.blocks";node="0123456789abcdef"`,
		`</.well-known/eris>;rt="eris.blocks";node="zz"`,
		`</.well-known/eris>;rt="eris.blocks"`,
		`<//evil/x>;rt="eris.blocks";node="0123456789abcdef"`,
		`</a>;rt=eris.blocks;node=0000000000000000,</b>;rt="eris.blocks"`,
	} {
		f.Add(s)
	}
	from := netip.MustParseAddrPort("10.0.0.7:5683")
	token := []byte{1, 2, 3, 4}
	f.Fuzz(func(t *testing.T, payload string) {
		m := message.Message{Token: token, Code: codes.Content, Type: message.NonConfirmable, MessageID: 1, Payload: []byte(payload),
			Options: message.Options{{ID: message.ContentFormat, Value: []byte{byte(message.AppLinkFormat)}}}}
		buf := make([]byte, len(payload)+64)
		n, err := coder.DefaultCoder.Encode(m, buf)
		if err != nil {
			return
		}
		d, err := discovered(from, buf[:n], token)
		if err != nil || d.URL == "" {
			if d != (Discovered{}) {
				t.Fatalf("%q: %+v with %v", payload, d, err)
			}
			return
		}
		if !strings.HasPrefix(d.URL, "coap://10.0.0.7:5683/") {
			t.Fatalf("%q: discovered %q, not on the answering address", payload, d.URL)
		}
		if !d.Node.IsZero() {
			if _, err := ParseNodeID(d.Node.String()); err != nil {
				t.Fatalf("%q: node %v: %v", payload, d.Node, err)
			}
		}
	})
}

// TestDiscoverNodeID: a discoverable node's answer carries its node id,
// which DiscoverNodes returns; DialNeighbour reaches both its store and
// its held resource.
func TestDiscoverNodeID(t *testing.T) {
	noLeaks(t)
	ns := testNetns(t)
	blocks := randomBlocks(t, 1, eris.BlockSize32K)
	store, refs := storeWith(t, blocks...)
	ctx := context.Background()
	inNetns(t, ns, func() {
		id := NewNodeID()
		srv := NewServer(store, ServerOptions{Discoverable: true, Node: id})
		defer srv.Close()
		if _, err := srv.Listen(ctx, "coap://0.0.0.0:5683"); err != nil {
			t.Error(err)
			return
		}
		found, err := DiscoverNodes(ctx, DiscoverOptions{})
		if err != nil || len(found) != 1 || found[0].Node != id || found[0].URL != "coap://127.0.0.1:5683/.well-known/eris" {
			t.Errorf("discovered %+v (%v), want the store of node %v", found, err, id)
			return
		}
		p, err := DialNeighbour(ctx, found[0].URL, ClientOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		defer p.Close()
		for _, c := range []context.Context{ctx, NoRelay(ctx)} {
			if b, err := p.GetBlock(c, refs[0]); err != nil || !bytes.Equal(b, blocks[0]) {
				t.Errorf("block from the neighbour (held %v): %v", IsNoRelay(c), err)
			}
		}
	})
}
