package sexp_test

import (
	"os"
	"testing"

	"erismount/narinfo/sexp"
)

// FuzzParse: Parse never panics, and what it accepts survives both
// printers: parsing Canonical() and Advanced() gives an equal value.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"test-key.pub", "test-key.sec", "test.acl", "signature-a.sexp"} {
		if b, err := os.ReadFile("testdata/" + name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := sexp.Parse(b)
		if err != nil {
			return
		}
		for _, form := range [][]byte{v.Canonical(), v.Advanced()} {
			w, err := sexp.Parse(form)
			if err != nil {
				t.Fatalf("printed form %q does not parse: %v", form, err)
			}
			if !sexp.Equal(v, w) {
				t.Fatalf("printed form %q parses to another value", form)
			}
		}
	})
}
