package narinfo_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"erismount/narinfo"
)

// TestERISNarField: the ERIS-Nar field parses to a capability and a
// compression, and every malformed or misplaced value is a syntax error
// naming the field.
func TestERISNarField(t *testing.T) {
	c1, c2 := testCap(t, 1).URN(), testCap(t, 2).URN()
	tests := []struct {
		name  string
		text  string
		want  narinfo.ERISNar
		parse string // the syntax error expected, "" for none
	}{
		{name: "none", text: base},
		{name: "zstd", text: base + "ERIS-Nar: " + c1 + " zstd\n", want: narinfo.ERISNar{Capability: testCap(t, 1), Compression: "zstd"}},
		{name: "unknown method kept", text: base + "ERIS-Nar: " + c1 + " brotli2\n", want: narinfo.ERISNar{Capability: testCap(t, 1), Compression: "brotli2"}},
		{name: "same twice", text: base + "ERIS-Nar: " + c1 + " xz\nERIS-Nar: " + c1 + " xz\n", want: narinfo.ERISNar{Capability: testCap(t, 1), Compression: "xz"}},
		{name: "beside ERIS", text: base + "ERIS: " + c2 + "\nERIS-Nar: " + c1 + " none\n", want: narinfo.ERISNar{Capability: testCap(t, 1), Compression: "none"}},
		{name: "two values", text: base + "ERIS-Nar: " + c1 + " xz\nERIS-Nar: " + c2 + " xz\n", parse: "ERIS-Nar repeated with another value"},
		{name: "other compression", text: base + "ERIS-Nar: " + c1 + " xz\nERIS-Nar: " + c1 + " zstd\n", parse: "ERIS-Nar repeated with another value"},
		{name: "after the signature", text: base + sigLine + "ERIS-Nar: " + c1 + " zstd\n", parse: "ERIS-Nar after the Signature line"},
		{name: "no compression", text: base + "ERIS-Nar: " + c1 + "\n", parse: "ERIS-Nar: "},
		{name: "two blanks", text: base + "ERIS-Nar: " + c1 + "  zstd\n", parse: "compression"},
		{name: "upper case method", text: base + "ERIS-Nar: " + c1 + " ZSTD\n", parse: "compression"},
		{name: "trailing word", text: base + "ERIS-Nar: " + c1 + " zstd 19\n", parse: "compression"},
		{name: "erisx2", text: base + "ERIS-Nar: urn:erisx2:BIBC2LUTIQH43SAAAA zstd\n", parse: "ERIS-Nar:"},
		{name: "not a urn", text: base + "ERIS-Nar: nar/zstd/x zstd\n", parse: "ERIS-Nar:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := narinfo.Parse([]byte(tt.text))
			if tt.parse != "" {
				if !errors.Is(err, narinfo.ErrSyntax) || !strings.Contains(err.Error(), tt.parse) {
					t.Fatalf("got %v, want a syntax error about %q", err, tt.parse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := n.NarCapability()
			if tt.want.IsZero() {
				if !errors.Is(err, narinfo.ErrNoERISNar) {
					t.Fatalf("NarCapability = %v, %v; want ErrNoERISNar", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NarCapability = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// signedERISNar is sampleNarinfo with an ERIS-Nar field, signed with the
// test key in layout l.
func signedERISNar(t *testing.T, l narinfo.Layout) (*narinfo.Narinfo, []byte) {
	t.Helper()
	n := sampleNarinfo(t)
	n.ERISNar = narinfo.ERISNar{Capability: testCap(t, 3), Compression: "zstd"}
	raw, err := n.Sign(l, testKey(t), "erismount-test")
	if err != nil {
		t.Fatal(err)
	}
	return n, raw
}

// TestERISNarSigned: both layouts write ERIS-Nar above the signature, right
// after ERIS; the narinfo parses back with a valid signature and the same
// field; changing any byte of the field's value breaks the signature
// (hash mismatch), and moving it below the signature is refused.
func TestERISNarSigned(t *testing.T) {
	for _, l := range []narinfo.Layout{narinfo.Classic, narinfo.ERISv4} {
		t.Run(l.String(), func(t *testing.T) {
			n, raw := signedERISNar(t, l)
			line := "ERIS-Nar: " + n.ERISNar.String() + "\n"
			if !bytes.Contains(raw, []byte("\nERIS: "+n.ERIS.URN()+"\n"+line)) {
				t.Fatalf("ERIS-Nar not right after ERIS:\n%s", raw)
			}
			back, err := narinfo.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			signed, _ := back.SignedPart()
			if !bytes.Contains(signed, []byte(line)) {
				t.Fatalf("ERIS-Nar not in the signed part:\n%s", raw)
			}
			if o, err := back.Verify(testACL(t)); o != narinfo.Valid {
				t.Fatalf("%v: %v", o, err)
			}
			if got, err := back.NarCapability(); err != nil || got != n.ERISNar {
				t.Fatalf("NarCapability = %v, %v", got, err)
			}

			// Tamper: another capability, another compression.
			for _, other := range []string{
				"ERIS-Nar: " + testCap(t, 4).URN() + " zstd\n",
				"ERIS-Nar: " + n.ERISNar.Capability.URN() + " xz\n",
			} {
				bad, err := narinfo.Parse(bytes.Replace(raw, []byte(line), []byte(other), 1))
				if err != nil {
					t.Fatal(err)
				}
				if o, err := bad.Verify(testACL(t)); o != narinfo.HashMismatch || !errors.Is(err, narinfo.ErrNotValid) {
					t.Errorf("tampered %q: %v, %v; want hash mismatch", strings.TrimSpace(other), o, err)
				}
			}
			// Moved below the signature: refused, as any identity field.
			moved := append(bytes.Replace(raw, []byte(line), nil, 1), line...)
			if _, err := narinfo.Parse(moved); !errors.Is(err, narinfo.ErrSyntax) {
				t.Errorf("ERIS-Nar below the signature parsed: %v", err)
			}
		})
	}
}

// TestERISNarUnknownToGuix: a client that does not know ERIS-Nar follows
// Guix's rules (spec §1.1, §1.4): it skips unknown fields and verifies the
// signature over the raw bytes before the first "Signature:". Done here
// without package narinfo's parser — the signed part cut by hand and
// checked by libgcrypt, the library Guix verifies with — so a narinfo with
// ERIS-Nar is valid to an unmodified Guix.
func TestERISNarUnknownToGuix(t *testing.T) {
	_, raw := signedERISNar(t, narinfo.ERISv4)
	i := bytes.Index(raw, []byte("Signature:"))
	signed := raw[:i]
	value := raw[i+len("Signature:"):]
	value = bytes.TrimSpace(value[:bytes.IndexByte(value, '\n')])
	parts := strings.Split(string(value), ";")
	if len(parts) != 3 {
		t.Fatalf("signature field %q", value)
	}
	sig, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sigFile, msgFile := filepath.Join(dir, "sig"), filepath.Join(dir, "msg")
	if err := os.WriteFile(sigFile, sig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(msgFile, signed, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := gcrypt(t, "verify", sigFile, msgFile); err != nil {
		t.Fatalf("libgcrypt rejects the signature over the raw signed part with ERIS-Nar: %v", err)
	}
	// And the same with the field's value changed: rejected.
	tampered := bytes.Replace(signed, []byte(" zstd\n"), []byte(" xz\n"), 1)
	if bytes.Equal(tampered, signed) {
		t.Fatal("no ERIS-Nar in the signed part")
	}
	os.WriteFile(msgFile, tampered, 0o644)
	if _, err := gcrypt(t, "verify", sigFile, msgFile); err == nil {
		t.Fatal("libgcrypt accepts a tampered ERIS-Nar: the check checks nothing")
	}
}

// TestERISNarNixSig: Nix's signature covers a fingerprint, not the text, so
// adding ERIS-Nar keeps a Nix Sig valid — and does not authenticate the
// field (the decompressed nar is checked against NarHash, which is).
func TestERISNarNixSig(t *testing.T) {
	k, err := narinfo.GenerateNixKey("erismount-test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	n := sampleNarinfo(t)
	if err := n.SignNix(k); err != nil {
		t.Fatal(err)
	}
	n.ERISNar = narinfo.ERISNar{Capability: testCap(t, 5), Compression: "xz"}
	raw, err := n.Marshal(narinfo.ERISv4)
	if err != nil {
		t.Fatal(err)
	}
	back, err := narinfo.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := back.VerifyNix([]narinfo.NixPublicKey{k.Public()}); err != nil {
		t.Fatalf("Nix Sig with ERIS-Nar: %v", err)
	}
}

func TestERISNarWriteRejects(t *testing.T) {
	for _, comp := range []string{"", "Zstd", "z std", "zstd\nNarSize: 1"} {
		n := sampleNarinfo(t)
		n.ERISNar = narinfo.ERISNar{Capability: testCap(t, 3), Compression: comp}
		if _, err := n.Marshal(narinfo.ERISv4); !errors.Is(err, narinfo.ErrSyntax) {
			t.Errorf("compression %q: %v, want a syntax error", comp, err)
		}
	}
}
