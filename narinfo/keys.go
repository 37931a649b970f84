package narinfo

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"

	"filippo.io/edwards25519"

	"erismount/narinfo/sexp"
)

// ErrKey is matched by every error about a malformed or unsupported key.
var ErrKey = errors.New("bad signing key")

// curveName is the only curve Guix keys use.
const curveName = "Ed25519"

// PublicKey is the public half of a Guix signing key, the 32-byte encoding
// of a point on the Ed25519 curve (spec §1.5). It is comparable; the zero
// value is no key.
type PublicKey struct {
	q [32]byte
}

// ParsePublicKey parses the text of a Guix public key file
// (signing-key.pub): (public-key (ecc (curve Ed25519) (q #…#))).
func ParsePublicKey(text []byte) (PublicKey, error) {
	v, err := sexp.Parse(text)
	if err != nil {
		return PublicKey{}, fmt.Errorf("narinfo: public key: %w", err)
	}
	return publicKeyFromSexp(v)
}

// publicKeyFromSexp reads a (public-key (ecc (curve Ed25519) (q …))).
func publicKeyFromSexp(v sexp.Value) (PublicKey, error) {
	if v.Head() != "public-key" {
		return PublicKey{}, fmt.Errorf("narinfo: %w: expected (public-key …), got (%s …)", ErrKey, v.Head())
	}
	q, err := eccParam(v, "q")
	if err != nil {
		return PublicKey{}, err
	}
	var k PublicKey
	if len(q) != 32 {
		return PublicKey{}, fmt.Errorf("narinfo: %w: q has %d bytes, want 32", ErrKey, len(q))
	}
	copy(k.q[:], q)
	if _, err := decodePoint(k.q[:]); err != nil {
		return PublicKey{}, fmt.Errorf("narinfo: %w: %v", ErrKey, err)
	}
	return k, nil
}

// eccParam checks that key (public or private) is an ECC key on Ed25519
// and returns its parameter name.
func eccParam(key sexp.Value, name string) ([]byte, error) {
	ecc := key.Nth(1)
	if ecc.Head() != "ecc" && ecc.Head() != "ecdsa" {
		return nil, fmt.Errorf("narinfo: %w: unsupported key type %q (only ECDSA on Ed25519 keys are supported)", ErrKey, ecc.Head())
	}
	curve, ok := ecc.Find("curve")
	if !ok || curve.Nth(1).String() != curveName {
		return nil, fmt.Errorf("narinfo: %w: key is not on curve Ed25519", ErrKey)
	}
	if flags, ok := ecc.Find("flags"); ok {
		for _, f := range flags.Items()[1:] {
			if f.String() == "eddsa" {
				return nil, fmt.Errorf("narinfo: %w: an EdDSA key (Guix keys are ECDSA on Ed25519)", ErrKey)
			}
		}
	}
	p, ok := ecc.Find(name)
	if !ok || p.Len() != 2 || p.Nth(1).IsList() {
		return nil, fmt.Errorf("narinfo: %w: missing parameter %s", ErrKey, name)
	}
	return p.Nth(1).Bytes(), nil
}

// Sexp returns the key as Guix writes and compares it.
func (k PublicKey) Sexp() sexp.Value {
	return sexp.List(sexp.Token("public-key"),
		sexp.List(sexp.Token("ecc"),
			sexp.List(sexp.Token("curve"), sexp.Token(curveName)),
			sexp.List(sexp.Token("q"), sexp.Atom(k.q[:]))))
}

// MarshalText returns the text of a public key file, byte-identical to
// what Guix (libgcrypt) writes.
func (k PublicKey) MarshalText() ([]byte, error) { return k.Sexp().Advanced(), nil }

// Bytes returns the encoded point.
func (k PublicKey) Bytes() []byte { return k.q[:] }

// IsZero reports whether k is the zero value.
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

func (k PublicKey) String() string { return fmt.Sprintf("ed25519:%X", k.q) }

// PrivateKey is a Guix signing key (signing-key.sec): the secret scalar d
// as stored, and its public point.
type PrivateKey struct {
	d   [32]byte
	pub PublicKey
}

// ParsePrivateKey parses the text of a Guix secret key file:
// (private-key (ecc (curve Ed25519) (q #…#) (d #…#))). It checks that q is
// d·B.
func ParsePrivateKey(text []byte) (*PrivateKey, error) {
	v, err := sexp.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("narinfo: private key: %w", err)
	}
	if v.Head() != "private-key" {
		return nil, fmt.Errorf("narinfo: %w: expected (private-key …), got (%s …)", ErrKey, v.Head())
	}
	d, err := eccParam(v, "d")
	if err != nil {
		return nil, err
	}
	if len(d) == 0 || len(d) > 32 {
		return nil, fmt.Errorf("narinfo: %w: d has %d bytes", ErrKey, len(d))
	}
	k := &PrivateKey{}
	copy(k.d[32-len(d):], d)
	k.pub = publicOf(k.d)
	q, err := eccParam(v, "q")
	if err != nil {
		return nil, err
	}
	if string(q) != string(k.pub.q[:]) {
		return nil, fmt.Errorf("narinfo: %w: q does not match d", ErrKey)
	}
	return k, nil
}

// GenerateKey returns a new key pair made as libgcrypt makes Guix's
// (genkey (ecdsa (curve Ed25519) (flags rfc6979))): 32 random bytes with
// bit 255 cleared, bit 254 set and the low three bits cleared, used
// directly as the scalar. rand nil means crypto/rand.
func GenerateKey(random io.Reader) (*PrivateKey, error) {
	if random == nil {
		random = rand.Reader
	}
	k := &PrivateKey{}
	if _, err := io.ReadFull(random, k.d[:]); err != nil {
		return nil, fmt.Errorf("narinfo: generate key: %w", err)
	}
	k.d[0] = k.d[0]&0x7f | 0x40
	k.d[31] &^= 7
	k.pub = publicOf(k.d)
	return k, nil
}

func publicOf(d [32]byte) PublicKey {
	x := new(big.Int).Mod(new(big.Int).SetBytes(d[:]), curveOrder)
	var k PublicKey
	copy(k.q[:], new(edwards25519.Point).ScalarBaseMult(scalar(x)).Bytes())
	return k
}

// Public returns the public half.
func (k *PrivateKey) Public() PublicKey { return k.pub }

// MarshalText returns the text of a secret key file, byte-identical to what
// Guix writes.
func (k *PrivateKey) MarshalText() ([]byte, error) {
	v := sexp.List(sexp.Token("private-key"),
		sexp.List(sexp.Token("ecc"),
			sexp.List(sexp.Token("curve"), sexp.Token(curveName)),
			sexp.List(sexp.Token("q"), sexp.Atom(k.pub.q[:])),
			sexp.List(sexp.Token("d"), sexp.Atom(k.d[:]))))
	return v.Advanced(), nil
}

// SignDigest signs a SHA-256 digest and returns the signature
// s-expression Guix writes: (signature (data (flags rfc6979) (hash sha256
// #…#)) (sig-val (ecdsa (r #…#) (s #…#))) (public-key …)). Signing is
// deterministic (RFC 6979), as with libgcrypt.
func (k *PrivateKey) SignDigest(digest [32]byte) sexp.Value {
	r, s := signECDSA(k.d, digest[:])
	data := sexp.List(sexp.Token("data"),
		sexp.List(sexp.Token("flags"), sexp.Token("rfc6979")),
		sexp.List(sexp.Token("hash"), sexp.Token("sha256"), sexp.Atom(digest[:])))
	sigVal := sexp.List(sexp.Token("sig-val"),
		sexp.List(sexp.Token("ecdsa"),
			sexp.List(sexp.Token("r"), sexp.Atom(r.Bytes())),
			sexp.List(sexp.Token("s"), sexp.Atom(s.Bytes()))))
	return sexp.List(sexp.Token("signature"), data, sigVal, k.pub.Sexp())
}
