package fetcher

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseLinkFormat(t *testing.T) {
	for _, c := range []struct {
		name string
		doc  string
		want []Link
		err  bool
	}{
		{"empty", "", nil, false},
		{"ours", `</.well-known/eris>;rt="eris.blocks";ct=42`, []Link{{"/.well-known/eris", []LinkAttr{{"rt", "eris.blocks"}, {"ct", "42"}}}}, false},
		// RFC 6690 §5, example 2 (with a space after a comma).
		{"rfc 6690", `</sensors/temp>;if="sensor", </sensors/light>;if="sensor"`, []Link{
			{"/sensors/temp", []LinkAttr{{"if", "sensor"}}},
			{"/sensors/light", []LinkAttr{{"if", "sensor"}}},
		}, false},
		{"quoted comma and escape", `</a>;title="x, \"y\"; z";obs`, []Link{{"/a", []LinkAttr{{"title", `x, "y"; z`}, {"obs", ""}}}}, false},
		{"absolute target", `<coap://[2001:db8::1]:5683/s>;rt=eris.blocks`, []Link{{"coap://[2001:db8::1]:5683/s", []LinkAttr{{"rt", "eris.blocks"}}}}, false},
		{"no angle", `/a;rt=x`, nil, true},
		{"unterminated target", `</a;rt=x`, nil, true},
		{"unterminated quote", `</a>;rt="x`, nil, true},
		{"empty param", `</a>;;rt=x`, nil, true},
		{"empty value", `</a>;rt=`, nil, true},
		{"garbage after", `</a> x`, nil, true},
		{"trailing comma", `</a>,`, nil, true},
		{"space in target", `</a b>`, nil, true},
	} {
		got, err := ParseLinkFormat(c.doc)
		if (err != nil) != c.err || (err != nil && !errors.Is(err, ErrLinkFormat)) {
			t.Errorf("%s: error %v, want error %v", c.name, err, c.err)
			continue
		}
		if !c.err && !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
	links, _ := ParseLinkFormat(`</s>;rt="core.rd eris.blocks"`)
	if !links[0].HasAttrValue("rt", "eris.blocks") || links[0].HasAttrValue("rt", "eris") {
		t.Error("HasAttrValue does not split rt into its values")
	}
	if _, err := ParseLinkFormat(strings.Repeat("</a>,", maxLinks) + "</a>"); err == nil {
		t.Errorf("a document of %d links was accepted", maxLinks+1)
	}
}

// FuzzParseLinkFormat checks that the parser never panics, and that what
// it accepts it accepts again when written back in canonical form.
func FuzzParseLinkFormat(f *testing.F) {
	for _, s := range []string{
		`</.well-known/eris>;rt="eris.blocks";ct=42`,
		`</sensors/temp>;if="sensor", </sensors/light>;if="sensor"`,
		`</a>;title="x, \"y\"; z";obs`,
		`<coap://[2001:db8::1]:5683/s>;rt=eris.blocks`,
		``, `<`, `</a>;`, `</a>;rt="`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		links, err := ParseLinkFormat(doc)
		if err != nil {
			return
		}
		again, err := ParseLinkFormat(formatLinks(links))
		if err != nil {
			t.Fatalf("%q parsed, but its canonical form %q does not: %v", doc, formatLinks(links), err)
		}
		if !reflect.DeepEqual(links, again) && !(len(links) == 0 && len(again) == 0) {
			t.Fatalf("%q: %+v, then %+v", doc, links, again)
		}
	})
}
