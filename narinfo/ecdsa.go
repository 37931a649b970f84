package narinfo

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"math/big"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// Guix signs with ECDSA on the Ed25519 curve, not EdDSA: libgcrypt's
// (ecdsa (curve Ed25519)) key, a secret scalar d used directly, Q = d·B,
// r = x(k·B) mod n with x the affine x coordinate, s = k⁻¹(e + d·r) mod n,
// e = the SHA-256 digest truncated to 253 bits (spec §1.5). Go's
// crypto/ed25519 cannot check it; the group arithmetic comes from
// filippo.io/edwards25519 and the scalar arithmetic mod n from math/big
// (a signature is checked once per narinfo, so speed is not a concern).

// curveOrder is n = 2^252 + 27742317777372353535851937790883648493.
var curveOrder, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

// qBits is the bit length of n.
const qBits = 253

var errBadPoint = errors.New("public key is not a canonical Ed25519 point")

// decodePoint decodes q, rejecting non-canonical encodings (which
// edwards25519 would accept).
func decodePoint(q []byte) (*edwards25519.Point, error) {
	p, err := new(edwards25519.Point).SetBytes(q)
	if err != nil || !bytes.Equal(p.Bytes(), q) {
		return nil, errBadPoint
	}
	return p, nil
}

// scalar converts 0 ≤ x < n to an edwards25519 scalar.
func scalar(x *big.Int) *edwards25519.Scalar {
	var le [32]byte
	x.FillBytes(le[:])
	for i, j := 0, 31; i < j; i, j = i+1, j-1 {
		le[i], le[j] = le[j], le[i]
	}
	s, err := edwards25519.NewScalar().SetCanonicalBytes(le[:])
	if err != nil {
		panic("narinfo: scalar out of range") // callers reduce mod n
	}
	return s
}

// affineX returns the affine x coordinate of p as an integer in [0, p).
func affineX(p *edwards25519.Point) *big.Int {
	x, _, z, _ := p.ExtendedCoordinates()
	var ax field.Element
	ax.Multiply(x, new(field.Element).Invert(z))
	le := ax.Bytes()
	for i, j := 0, len(le)-1; i < j; i, j = i+1, j-1 {
		le[i], le[j] = le[j], le[i]
	}
	return new(big.Int).SetBytes(le)
}

// hashToInt is bits2int of RFC 6979 §2.3.2: the digest as a big-endian
// integer keeping its leftmost qBits bits, as libgcrypt truncates an opaque
// hash value.
func hashToInt(digest []byte) *big.Int {
	e := new(big.Int).SetBytes(digest)
	if excess := len(digest)*8 - qBits; excess > 0 {
		e.Rsh(e, uint(excess))
	}
	return e
}

// verifyECDSA reports whether (r, s) is a signature of digest under the
// point encoded in q.
func verifyECDSA(q, digest []byte, r, s *big.Int) bool {
	pub, err := decodePoint(q)
	if err != nil {
		return false
	}
	if r.Sign() <= 0 || r.Cmp(curveOrder) >= 0 || s.Sign() <= 0 || s.Cmp(curveOrder) >= 0 {
		return false
	}
	e := new(big.Int).Mod(hashToInt(digest), curveOrder)
	w := new(big.Int).ModInverse(s, curveOrder)
	u1 := new(big.Int).Mod(new(big.Int).Mul(e, w), curveOrder)
	u2 := new(big.Int).Mod(new(big.Int).Mul(r, w), curveOrder)
	x := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(scalar(u2), pub, scalar(u1))
	if x.Equal(edwards25519.NewIdentityPoint()) == 1 {
		return false
	}
	return new(big.Int).Mod(affineX(x), curveOrder).Cmp(r) == 0
}

// signECDSA signs digest with the secret d (32 big-endian bytes exactly as
// stored in the key file) using the deterministic nonce of RFC 6979 with
// HMAC-SHA-256, as libgcrypt does for the rfc6979 flag. The nonce
// derivation is fed the unreduced d: libgcrypt's bytes, hence its
// signatures (spec §1.5).
func signECDSA(d [32]byte, digest []byte) (r, s *big.Int) {
	dInt := new(big.Int).Mod(new(big.Int).SetBytes(d[:]), curveOrder)
	e := new(big.Int).Mod(hashToInt(digest), curveOrder)
	nonces := newRFC6979(d[:], digest)
	for {
		k := nonces.next()
		R := new(edwards25519.Point).ScalarBaseMult(scalar(k))
		r = new(big.Int).Mod(affineX(R), curveOrder)
		if r.Sign() == 0 {
			continue
		}
		s = new(big.Int).Mul(dInt, r)
		s.Add(s, e)
		s.Mul(s, new(big.Int).ModInverse(k, curveOrder))
		s.Mod(s, curveOrder)
		if s.Sign() == 0 {
			continue
		}
		return r, s
	}
}

// rfc6979 generates the nonces of RFC 6979 §3.2 for qlen = 253 and
// HMAC-SHA-256.
type rfc6979 struct {
	k, v []byte
}

func (g *rfc6979) mac(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, g.k)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func newRFC6979(x, digest []byte) *rfc6979 {
	// bits2octets(h1) = int2octets(bits2int(h1) mod q).
	h := new(big.Int).Mod(hashToInt(digest), curveOrder).FillBytes(make([]byte, 32))
	g := &rfc6979{k: make([]byte, 32), v: bytes.Repeat([]byte{1}, 32)}
	g.k = g.mac(g.v, []byte{0}, x, h)
	g.v = g.mac(g.v)
	g.k = g.mac(g.v, []byte{1}, x, h)
	g.v = g.mac(g.v)
	return g
}

// next returns the next candidate k with 1 ≤ k < n.
func (g *rfc6979) next() *big.Int {
	for {
		g.v = g.mac(g.v) // 256 bits ≥ qlen: one block suffices
		k := hashToInt(g.v)
		if k.Sign() > 0 && k.Cmp(curveOrder) < 0 {
			// Prepare the state for a possible next call (step h.3).
			g.k = g.mac(g.v, []byte{0})
			g.v = g.mac(g.v)
			return k
		}
		g.k = g.mac(g.v, []byte{0})
		g.v = g.mac(g.v)
	}
}
