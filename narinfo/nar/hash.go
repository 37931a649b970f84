package nar

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// nix32Alphabet is Nix's base-32 alphabet: digits and letters without
// e, o, u and t (spec §2.2).
const nix32Alphabet = "0123456789abcdfghijklmnpqrsvwxyz"

// ErrHash is matched by every error about a malformed hash string.
var ErrHash = errors.New("malformed hash")

// Nix32Len is the length of the nix-base32 encoding of n bytes.
func Nix32Len(n int) int {
	if n == 0 {
		return 0
	}
	return (n*8-1)/5 + 1
}

// EncodeNix32 encodes b in Nix's base 32: the bytes are read as a
// little-endian bit string and printed most significant quintet first
// (spec §2.2).
func EncodeNix32(b []byte) string {
	l := Nix32Len(len(b))
	out := make([]byte, l)
	for n := l - 1; n >= 0; n-- {
		bit := n * 5
		i, j := bit/8, uint(bit%8)
		c := b[i] >> j
		if i+1 < len(b) {
			c |= b[i+1] << (8 - j)
		}
		out[l-1-n] = nix32Alphabet[c&0x1f]
	}
	return string(out)
}

// DecodeNix32 decodes a nix-base32 string. It rejects characters outside
// the alphabet, lengths no byte count encodes to, and set bits beyond the
// decoded length (so every value has exactly one encoding).
func DecodeNix32(s string) ([]byte, error) {
	n := len(s) * 5 / 8
	if Nix32Len(n) != len(s) {
		return nil, fmt.Errorf("nar: %w: nix-base32 string of length %d", ErrHash, len(s))
	}
	b := make([]byte, n)
	for k := 0; k < len(s); k++ {
		c := strings.IndexByte(nix32Alphabet, s[len(s)-1-k])
		if c < 0 {
			return nil, fmt.Errorf("nar: %w: %q is not a nix-base32 character", ErrHash, s[len(s)-1-k])
		}
		bit := k * 5
		i, j := bit/8, uint(bit%8)
		b[i] |= byte(c << j)
		if carry := byte(c >> (8 - j)); carry != 0 {
			if i+1 >= n {
				return nil, fmt.Errorf("nar: %w: nix-base32 string %q overflows %d bytes", ErrHash, s, n)
			}
			b[i+1] |= carry
		}
	}
	return b, nil
}

// Hash is the SHA-256 of a nar, the NarHash of a narinfo. The zero value
// means "none".
type Hash [sha256.Size]byte

// ParseHash parses "sha256:" followed by 52 nix-base32 characters (what
// narinfos carry) or by 64 hexadecimal digits (what the daemon's database
// carries).
func ParseHash(s string) (Hash, error) {
	var h Hash
	v, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return h, fmt.Errorf("nar: %w: %s does not start with \"sha256:\"", ErrHash, quote(s))
	}
	var b []byte
	var err error
	switch len(v) {
	case Nix32Len(sha256.Size):
		b, err = DecodeNix32(v)
	case hex.EncodedLen(sha256.Size):
		b, err = hex.DecodeString(v)
		if err != nil || strings.ToLower(v) != v {
			err = fmt.Errorf("nar: %w: %s is not lower-case hexadecimal", ErrHash, quote(v))
		}
	default:
		err = fmt.Errorf("nar: %w: sha256 hash %s has %d characters, want 52 (nix-base32) or 64 (hex)", ErrHash, quote(v), len(v))
	}
	if err != nil {
		return h, err
	}
	copy(h[:], b)
	return h, nil
}

// String returns "sha256:" and the nix-base32 digest, as in a narinfo.
func (h Hash) String() string { return "sha256:" + h.Nix32() }

// Nix32 returns the digest in nix-base32, as printed by nix-hash --base32.
func (h Hash) Nix32() string { return EncodeNix32(h[:]) }

// Hex returns the digest in lower-case hexadecimal.
func (h Hash) Hex() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is the zero value.
func (h Hash) IsZero() bool { return h == Hash{} }

// MarshalText implements encoding.TextMarshaler with String's form.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseHash.
func (h *Hash) UnmarshalText(b []byte) error {
	v, err := ParseHash(string(b))
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// Sum is a nar's identity as a narinfo states it: NarHash and NarSize.
type Sum struct {
	Hash Hash
	Size int64
}

func (s Sum) String() string { return fmt.Sprintf("%s %d", s.Hash, s.Size) }

// HashingWriter passes bytes on to an optional writer while computing the
// NarHash and NarSize of everything written.
type HashingWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

// NewHashingWriter returns a HashingWriter writing to w, or only hashing if
// w is nil.
func NewHashingWriter(w io.Writer) *HashingWriter {
	return &HashingWriter{w: w, h: sha256.New()}
}

// Write hashes p and writes it to the underlying writer. Bytes are hashed
// and counted only once the underlying writer took them.
func (hw *HashingWriter) Write(p []byte) (int, error) {
	n := len(p)
	var err error
	if hw.w != nil {
		n, err = hw.w.Write(p)
	}
	hw.h.Write(p[:n])
	hw.n += int64(n)
	return n, err
}

// Sum returns the hash and size of what was written so far.
func (hw *HashingWriter) Sum() Sum {
	var s Sum
	hw.h.Sum(s.Hash[:0])
	s.Size = hw.n
	return s
}
