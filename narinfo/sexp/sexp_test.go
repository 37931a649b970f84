package sexp_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"erismount/narinfo/sexp"
)

// TestAdvancedReproducesLibgcrypt parses files libgcrypt printed and prints
// them again byte for byte.
func TestAdvancedReproducesLibgcrypt(t *testing.T) {
	for _, name := range []string{"test-key.pub", "test-key.sec", "signature-a.sexp"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile("testdata/" + name)
			if err != nil {
				t.Fatal(err)
			}
			v, err := sexp.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.Advanced(); !bytes.Equal(got, b) {
				t.Errorf("Advanced() differs from libgcrypt's text:\n%s\nwant\n%s", got, b)
			}
			c, err := sexp.Parse(v.Canonical())
			if err != nil || !sexp.Equal(c, v) {
				t.Errorf("canonical round trip: %v", err)
			}
		})
	}
}

// TestAdvancedLayout checks the layout rules of spec §1.5 case by case.
func TestAdvancedLayout(t *testing.T) {
	tests := []struct{ in, want string }{
		{"(a)", "(a)\n"},
		{"()", "()\n"},
		{"(a b c)", "(a b c)\n"},
		{"(a (b c))", "(a \n (b c)\n )\n"},
		{"(a (b) c)", "(a \n (b)\n c)\n"},
		{"((a)(b))", "(\n (a)\n (b)\n )\n"},
		{`(a "" "1abc" "x y" "q\"" #00# #80FF# "\n")`, `(a "" "1abc" "x y" "q\"" #00# #80FF# "\n")` + "\n"},
		{"(a 3:\x01bc)", "(a #016263#)\n"},
		{"(a |YWJj|)", "(a abc)\n"},
		{`(a "caf\xc3\xa9")`, "(a \"caf\xc3\xa9\")\n"}, // bytes above 0xa0 stay raw
		{`(a "a\xc2\x80")`, "(a #61C280#)\n"},
		{`(a "\xe9t\xe9")`, "(a #E974E9#)\n"},
		{`(a "ab\xa1")`, "(a \"ab\xa1\")\n"},
		{`(a "a'b\\c")`, `(a "a\'b\\c")` + "\n"},
	}
	for _, tt := range tests {
		v, err := sexp.Parse([]byte(tt.in))
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := string(v.Advanced()); got != tt.want {
			t.Errorf("Advanced(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestAtomForms: every atom encoding parses to the same bytes.
func TestAtomForms(t *testing.T) {
	forms := []string{
		"(q abc)", `(q "abc")`, "(q #616263#)", "(q # 61 62\n63 #)", "(q |YWJj|)", "(q 3:abc)",
		`(q "a\142c")`, `(q "a\x62c")`, "(q \"ab\\\nc\")", "(1:q3:abc)", " \n(q\tabc)\n\n",
	}
	want := sexp.List(sexp.Token("q"), sexp.Token("abc"))
	for _, f := range forms {
		v, err := sexp.Parse([]byte(f))
		if err != nil {
			t.Errorf("Parse(%q): %v", f, err)
			continue
		}
		if !sexp.Equal(v, want) {
			t.Errorf("Parse(%q) = %q, want %q", f, v.Canonical(), want.Canonical())
		}
	}
	if got := string(want.Canonical()); got != "(1:q3:abc)" {
		t.Errorf("Canonical = %q", got)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct{ name, in, reason string }{
		{"empty", "", "expected '('"},
		{"atom at top", "abc", "expected '('"},
		{"unclosed", "(a (b)", "unclosed list"},
		{"extra close", "(a))", "data after"},
		{"two expressions", "(a)(b)", "data after"},
		{"odd hex", "(a #123#)", "odd number"},
		{"bad hex", "(a #zz#)", "bad hexadecimal"},
		{"unterminated hex", "(a #12", "unterminated"},
		{"bad base64", "(a |***|)", "base64"},
		{"short verbatim", "(a 10:abc)", "runs past the end"},
		{"huge verbatim", "(a 99999999999999999999999:abc)", "length too large"},
		{"leading zero", "(a 03:abc)", "leading zero"},
		{"length-prefixed string", `(a 3"abc")`, "expected ':'"},
		{"display hint", "([text/plain]abc)", "display hints"},
		{"transport", "{KDE6YSk=}", "expected '('"},
		{"unterminated string", `(a "abc)`, "unterminated string"},
		{"bad escape", `(a "\q")`, "unknown escape"},
		{"control character", "(a \x01)", "unexpected character"},
		{"too deep", strings.Repeat("(", sexp.MaxDepth+1) + strings.Repeat(")", sexp.MaxDepth+1), "nested deeper"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sexp.Parse([]byte(tt.in))
			if !errors.Is(err, sexp.ErrSyntax) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("got %v, want a syntax error about %q", err, tt.reason)
			}
		})
	}
}

func TestFind(t *testing.T) {
	b, _ := os.ReadFile("testdata/signature-a.sexp")
	v, err := sexp.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	q, ok := v.Find("q")
	if !ok || len(q.Nth(1).Bytes()) != 32 || q.Nth(1).Bytes()[0] != 0xB5 {
		t.Fatalf("Find(q) = %q, %v", q.Canonical(), ok)
	}
	if self, ok := v.Find("signature"); !ok || !sexp.Equal(self, v) {
		t.Errorf("Find of the head does not return the list itself")
	}
	if _, ok := v.Find("nothing"); ok {
		t.Errorf("found a token that is not there")
	}
	if _, ok := v.Find("Ed25519"); ok {
		t.Errorf("an atom that heads no list was found")
	}
}
