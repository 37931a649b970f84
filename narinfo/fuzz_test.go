package narinfo_test

import (
	"os"
	"slices"
	"testing"

	"erismount/narinfo"
)

// FuzzParse: Parse never panics; Verify of whatever it accepts never
// panics and is Valid only with the test key's real signature; and what
// the writer can write from a parsed narinfo parses back to the same
// fields.
func FuzzParse(f *testing.F) {
	for _, name := range vectors {
		if b, err := os.ReadFile("testdata/" + name); err == nil {
			f.Add(b)
		}
	}
	acl := testACL(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := narinfo.Parse(b)
		if err != nil {
			return
		}
		n.Verify(acl)
		n.Capability()
		n.NarCapability()
		out, err := n.Marshal(narinfo.ERISv4)
		if err != nil {
			return
		}
		m, err := narinfo.Parse(out)
		if err != nil {
			t.Fatalf("written narinfo does not parse: %v\n%s", err, out)
		}
		if m.StorePath != n.StorePath || m.NarHash != n.NarHash || m.NarSize != n.NarSize || m.ERIS != n.ERIS || m.ERISNar != n.ERISNar ||
			m.Deriver != n.Deriver || m.System != n.System || !slices.Equal(m.References, n.References) ||
			!slices.Equal(m.Locations, n.Locations) || !slices.Equal(m.Sigs, n.Sigs) {
			t.Fatalf("round trip changed the narinfo:\n%+v\n%+v", n, m)
		}
	})
}

// FuzzParseERISNar: ParseERISNar never panics, and what it accepts is
// written back by String to the same text and parses to the same value.
func FuzzParseERISNar(f *testing.F) {
	f.Add("urn:eris:BIAQGAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAADAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA zstd")
	f.Fuzz(func(t *testing.T, s string) {
		e, err := narinfo.ParseERISNar(s)
		if err != nil {
			return
		}
		if e.String() != s {
			t.Fatalf("%q parsed and written back as %q", s, e.String())
		}
		again, err := narinfo.ParseERISNar(e.String())
		if err != nil || again != e {
			t.Fatalf("%q: round trip %v, %v", s, again, err)
		}
	})
}
