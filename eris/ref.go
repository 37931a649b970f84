package eris

import (
	"encoding/base32"
	"fmt"

	"golang.org/x/crypto/blake2b"
)

// b32 is RFC 4648 base32, upper case, without padding: the alphabet of
// ERIS URNs and of references on the wire (specs/eris-transports.md).
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Ref is the reference of a block: the Blake2b-256 hash of its encrypted
// bytes (spec §2.3). It is comparable and usable as a map key; the zero Ref
// means "none" and is also the terminator of an internal node's pair list.
type Ref [32]byte

// RefLen is the length of a Ref in its base32 text form.
const RefLen = 52

// RefOf returns the reference of block: Blake2b-256 of its bytes.
func RefOf(block []byte) Ref { return Ref(blake2b.Sum256(block)) }

// ParseRef parses the 52-character base32 text form of a reference.
func ParseRef(s string) (Ref, error) {
	var r Ref
	if len(s) != RefLen {
		return r, fmt.Errorf("eris: parse ref %q: length %d, want %d base32 characters", s, len(s), RefLen)
	}
	n, err := b32.Decode(r[:], []byte(s))
	if err != nil || n != len(r) {
		return Ref{}, fmt.Errorf("eris: parse ref %q: bad base32: %v", s, err)
	}
	return r, nil
}

// RefFromBytes returns the reference held in b, which must be 32 bytes
// (the raw form used in CoAP URI-Query options).
func RefFromBytes(b []byte) (Ref, error) {
	var r Ref
	if len(b) != len(r) {
		return r, fmt.Errorf("eris: ref of %d bytes, want %d", len(b), len(r))
	}
	copy(r[:], b)
	return r, nil
}

// String returns the 52-character base32 form.
func (r Ref) String() string { return b32.EncodeToString(r[:]) }

// Str returns a short prefix of the base32 form, for logs.
func (r Ref) Str() string { return r.String()[:10] }

// IsZero reports whether r is the zero (absent) reference.
func (r Ref) IsZero() bool { return r == Ref{} }

// Verify checks that block hashes to r and has an ERIS block size. It
// returns an error wrapping ErrCorrupt naming r otherwise. Every block that
// enters the process from outside is checked with Verify once.
func (r Ref) Verify(block []byte) error {
	if !ValidBlockSize(len(block)) {
		return &BlockError{Ref: r, Err: fmt.Errorf("%w: block of %d bytes, want 1024 or 32768", ErrCorrupt, len(block))}
	}
	if RefOf(block) != r {
		return &BlockError{Ref: r, Err: fmt.Errorf("%w: content hash %s does not match", ErrCorrupt, RefOf(block).Str())}
	}
	return nil
}

// MarshalText implements encoding.TextMarshaler (the base32 form).
func (r Ref) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Ref) UnmarshalText(b []byte) error {
	p, err := ParseRef(string(b))
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// Key is the 32-byte ChaCha20 key that decrypts a block.
type Key [32]byte
