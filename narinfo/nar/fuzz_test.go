package nar_test

import (
	"bytes"
	"encoding/hex"
	"testing"

	"erismount/narinfo/nar/nartest"
)

// FuzzReader feeds arbitrary bytes to the Reader: it must never panic, and
// whatever it accepts must be canonical, i.e. written again byte for byte.
func FuzzReader(f *testing.F) {
	for _, v := range nartest.Vectors() {
		if b, err := hex.DecodeString(v.Hex); err == nil && v.Hex != "" {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := readAll(b); err != nil {
			return
		}
		out, err := copyNar(b)
		if err != nil {
			t.Fatalf("accepted by the reader but not rewritable: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("accepted a non-canonical nar:\n in %x\nout %x", b, out)
		}
	})
}
