package narinfo_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"

	"erismount/narinfo"
	"erismount/narinfo/sexp"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testKey(t testing.TB) *narinfo.PrivateKey {
	t.Helper()
	k, err := narinfo.ParsePrivateKey(readFile(t, "test-key.sec"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testACL(t testing.TB) *narinfo.ACL {
	t.Helper()
	a, err := narinfo.ParseACL(readFile(t, "test.acl"))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var vectors = []string{"vector-a.narinfo", "vector-b.narinfo"}

// TestVectorsVerify: the spec's signed narinfos (§1.8 b) are valid under
// the test ACL.
func TestVectorsVerify(t *testing.T) {
	for _, name := range vectors {
		n, err := narinfo.Parse(readFile(t, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if o, err := n.Verify(testACL(t)); o != narinfo.Valid || err != nil {
			t.Errorf("%s: %v, %v; want valid", name, o, err)
		}
	}
}

// TestVectorsSign: signing the vectors' fields with the test key reproduces
// them byte for byte (RFC 6979 as libgcrypt does it).
func TestVectorsSign(t *testing.T) {
	for _, name := range vectors {
		raw := readFile(t, name)
		n, err := narinfo.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := n.Sign(narinfo.Classic, testKey(t), "erismount-test")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, raw) {
			t.Errorf("%s: signing did not reproduce the vector:\n%s\nwant\n%s", name, got, raw)
		}
	}
}

// TestKeyFiles: parsing and printing the test key files gives their bytes.
func TestKeyFiles(t *testing.T) {
	k := testKey(t)
	sec, _ := k.MarshalText()
	if !bytes.Equal(sec, readFile(t, "test-key.sec")) {
		t.Errorf("secret key text differs:\n%s", sec)
	}
	pub, err := narinfo.ParsePublicKey(readFile(t, "test-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if pub != k.Public() {
		t.Errorf("public key file does not match the secret key")
	}
	if text, _ := pub.MarshalText(); !bytes.Equal(text, readFile(t, "test-key.pub")) {
		t.Errorf("public key text differs:\n%s", text)
	}
	if !testACL(t).Authorizes(pub) {
		t.Errorf("test.acl does not authorize the test key")
	}
}

func TestGenerateKey(t *testing.T) {
	k, err := narinfo.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := k.MarshalText()
	k2, err := narinfo.ParsePrivateKey(sec) // checks q == d·B
	if err != nil {
		t.Fatal(err)
	}
	if k2.Public() != k.Public() {
		t.Fatal("key changed in a round trip")
	}
	n, err := narinfo.Parse(readFile(t, "vector-b.narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := n.Sign(narinfo.ERISv4, k, "host")
	if err != nil {
		t.Fatal(err)
	}
	n2, err := narinfo.Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := n2.Verify(narinfo.NewACL(k.Public())); o != narinfo.Valid {
		t.Fatalf("own signature: %v, %v", o, err)
	}
	if o, _ := n2.Verify(testACL(t)); o != narinfo.UnauthorizedKey {
		t.Fatalf("other ACL: %v, want unauthorized key", o)
	}
}

// resign replaces the signature s-expression of a narinfo by f(sig).
func resign(t *testing.T, raw []byte, f func(string) string) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte("Signature: "))
	field := strings.TrimSpace(string(raw[i+len("Signature: "):]))
	parts := strings.Split(field, ";")
	text, _ := base64.StdEncoding.DecodeString(parts[2])
	parts[2] = base64.StdEncoding.EncodeToString([]byte(f(string(text))))
	return append(bytes.Clone(raw[:i]), "Signature: "+strings.Join(parts, ";")+"\n"...)
}

// TestVerifyOutcomes: every negative case of spec §1.8 gives Guix's
// outcome.
func TestVerifyOutcomes(t *testing.T) {
	a := readFile(t, "vector-a.narinfo")
	b := readFile(t, "vector-b.narinfo")
	otherKey, _ := narinfo.GenerateKey(nil)
	tests := []struct {
		name string
		raw  []byte
		acl  *narinfo.ACL
		want narinfo.Outcome
	}{
		{"vector a", a, testACL(t), narinfo.Valid},
		{"flipped byte above the signature", bytes.Replace(a, []byte("FileSize: 120"), []byte("FileSize: 121"), 1), testACL(t), narinfo.HashMismatch},
		{"References without its trailing space", bytes.Replace(a, []byte("References: \n"), []byte("References:\n"), 1), testACL(t), narinfo.HashMismatch},
		{"other host name", bytes.Replace(a, []byte(";erismount-test;"), []byte(";elsewhere;"), 1), testACL(t), narinfo.Valid},
		{"ACL without the key", a, narinfo.NewACL(otherKey.Public()), narinfo.UnauthorizedKey},
		{"empty ACL", a, &narinfo.ACL{}, narinfo.UnauthorizedKey},
		{"nil ACL", a, nil, narinfo.UnauthorizedKey},
		{"garbage base64", bytes.Replace(a, []byte(";KHNpZ25h"), []byte(";!!!!"), 1), testACL(t), narinfo.Unsigned},
		{"base64 of garbage", resign(t, a, func(string) string { return "not an s-expression" }), testACL(t), narinfo.Unsigned},
		{"version 2", bytes.Replace(a, []byte("Signature: 1;"), []byte("Signature: 2;"), 1), testACL(t), narinfo.Unsigned},
		{"two parts", bytes.Replace(a, []byte(";erismount-test;"), []byte(";"), 1), testACL(t), narinfo.Unsigned},
		{"no data", resign(t, a, func(s string) string { return strings.Replace(s, "(data", "(dada", 1) }), testACL(t), narinfo.CorruptSignature},
		{"no public key", resign(t, a, func(s string) string { return strings.Replace(s, "(public-key", "(public-kez", 1) }), testACL(t), narinfo.CorruptSignature},
		{"other hash inside", resign(t, a, func(s string) string { return strings.Replace(s, "#47A29200", "#47A29201", 1) }), testACL(t), narinfo.HashMismatch},
		{"r changed", resign(t, a, func(s string) string { return strings.Replace(s, "(r #08518A1C", "(r #08518A1D", 1) }), testACL(t), narinfo.InvalidSignature},
		{"s changed", resign(t, a, func(s string) string { return strings.Replace(s, "(s #048F325B", "(s #048F325C", 1) }), testACL(t), narinfo.InvalidSignature},
		{"r zero", resign(t, a, func(s string) string {
			return strings.Replace(s, "#08518A1CD5455A71F060D08DC0DB4BDA7EC7370EF217545FD7A0ADE537BD720C#", "#00#", 1)
		}), testACL(t), narinfo.InvalidSignature},
		{"signature of vector b on vector a", append(bytes.Clone(a[:bytes.Index(a, []byte("Signature:"))]), b[bytes.Index(b, []byte("Signature:")):]...), testACL(t), narinfo.HashMismatch},
		{"hash algorithm renamed", resign(t, a, func(s string) string { return strings.Replace(s, "(hash sha256", "(hash sha512", 1) }), testACL(t), narinfo.InvalidSignature},
		{"no sig-val", resign(t, a, func(s string) string { return strings.Replace(s, "(sig-val", "(sig-vax", 1) }), testACL(t), narinfo.InvalidSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := narinfo.Parse(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			got, err := n.Verify(tt.acl)
			if got != tt.want {
				t.Fatalf("got %v (%v), want %v", got, err, tt.want)
			}
			if got == narinfo.Valid {
				if err != nil {
					t.Fatalf("valid with an error: %v", err)
				}
				return
			}
			var ve *narinfo.VerifyError
			if !errors.As(err, &ve) || ve.Outcome != got || !errors.Is(err, narinfo.ErrNotValid) {
				t.Fatalf("error %v does not carry the outcome", err)
			}
		})
	}
	t.Run("no signature", func(t *testing.T) {
		n, err := narinfo.Parse(a[:bytes.Index(a, []byte("Signature:"))])
		if err != nil {
			t.Fatal(err)
		}
		if o, _ := n.Verify(testACL(t)); o != narinfo.Unsigned {
			t.Fatalf("got %v, want unsigned", o)
		}
	})
}

func TestParseACL(t *testing.T) {
	k := testKey(t).Public()
	acl := narinfo.NewACL(k)
	text, _ := acl.MarshalText()
	back, err := narinfo.ParseACL(text)
	if err != nil || !back.Authorizes(k) {
		t.Fatalf("round trip: %v", err)
	}
	// The spec's layout (§1.6): trailing spaces after heads with sub-lists.
	want := "(acl \n (entry \n  (public-key \n   (ecc \n    (curve Ed25519)\n    (q #B56092037F792D69249A485A097B2E6CCB95F0E73CBE0686C86B6C924D872E08#)\n    )\n   )\n  (tag \n   (guix import)\n   )\n  )\n )\n"
	if string(text) != want {
		t.Errorf("ACL text:\n%q\nwant\n%q", text, want)
	}
	bad := []struct{ name, text string }{
		{"not an acl", "(foo)"},
		{"wrong tag", "(acl (entry (public-key (ecc (curve Ed25519) (q #00#))) (tag (guix export))))"},
		{"extra item", "(acl (entry (public-key (ecc)) (tag (guix import)) x))"},
		{"atom entry", "(acl entry)"},
		{"syntax", "(acl"},
	}
	for _, tt := range bad {
		if _, err := narinfo.ParseACL([]byte(tt.text)); !errors.Is(err, narinfo.ErrACL) {
			t.Errorf("%s: got %v, want ErrACL", tt.name, err)
		}
	}
	empty, err := narinfo.ParseACL([]byte("(acl)"))
	if err != nil || empty.Authorizes(k) {
		t.Errorf("empty ACL: %v", err)
	}
	// Structural comparison: another layout and atom encoding of the key.
	other := "(acl (entry (public-key (ecc (curve \"Ed25519\") (q |" + base64.StdEncoding.EncodeToString(k.Bytes()) + "|))) (tag (guix import))))"
	if a, err := narinfo.ParseACL([]byte(other)); err != nil || !a.Authorizes(k) {
		t.Errorf("ACL in another layout: %v", err)
	}
}

func TestParseKeyRejects(t *testing.T) {
	pub := string(readFile(t, "test-key.pub"))
	sec := string(readFile(t, "test-key.sec"))
	tests := []struct{ name, text string }{
		{"rsa", "(public-key (rsa (n #00C1#) (e #010001#)))"},
		{"other curve", strings.Replace(pub, "Ed25519", "NIST P-256", 1)},
		{"eddsa", strings.Replace(pub, "(curve Ed25519)", "(curve Ed25519) (flags eddsa)", 1)},
		{"short q", strings.Replace(pub, "#B560", "#", 1)},
		{"not a point", strings.Replace(pub, "B56092037F792D69249A485A097B2E6CCB95F0E73CBE0686C86B6C924D872E08", "0200000000000000000000000000000000000000000000000000000000000000", 1)},
		{"non-canonical y", strings.Replace(pub, "B56092037F792D69249A485A097B2E6CCB95F0E73CBE0686C86B6C924D872E08", "EEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF7F", 1)},
		{"private as public", sec},
	}
	for _, tt := range tests {
		if _, err := narinfo.ParsePublicKey([]byte(tt.text)); !errors.Is(err, narinfo.ErrKey) && !errors.Is(err, sexp.ErrSyntax) {
			t.Errorf("%s: got %v, want an error", tt.name, err)
		}
	}
	if _, err := narinfo.ParsePrivateKey([]byte(strings.Replace(sec, "(d #424C", "(d #424D", 1))); !errors.Is(err, narinfo.ErrKey) {
		t.Errorf("q not matching d: got %v", err)
	}
}
