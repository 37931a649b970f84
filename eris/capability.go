package eris

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// URNPrefix starts the text form of a read capability (spec §2.5).
const URNPrefix = "urn:eris:"

// CBORTag is the CBOR tag of a binary read capability (spec §2.5.2).
const CBORTag = 276

// capLen is the length of the binary form: block-size byte, level byte,
// root reference and root key (spec §2.5.1).
const capLen = 2 + 32 + 32

// ErrMalformed is matched by every error about a malformed URN or binary
// capability.
var ErrMalformed = errors.New("malformed read capability")

// ReadCapability is what is needed to read content: the block size, the
// level of the tree and the reference and key of its root (spec §2.5). It is
// comparable; the zero value is "no capability".
type ReadCapability struct {
	blockSize int
	level     int
	root      Ref
	key       Key
}

// NewReadCapability returns a capability after checking that blockSize is
// an ERIS block size and level is possible for it.
func NewReadCapability(blockSize, level int, root Ref, key Key) (ReadCapability, error) {
	if !ValidBlockSize(blockSize) {
		return ReadCapability{}, fmt.Errorf("eris: %w: unknown block size %d", ErrMalformed, blockSize)
	}
	if level < 0 || level > MaxLevel(blockSize) {
		return ReadCapability{}, fmt.Errorf("eris: %w: level %d out of range 0..%d for block size %d", ErrMalformed, level, MaxLevel(blockSize), blockSize)
	}
	return ReadCapability{blockSize: blockSize, level: level, root: root, key: key}, nil
}

// MaxLevel is the highest tree level whose content can still be addressed
// by an int64 offset: a deeper tree is rejected as manipulated rather than
// walked (arity 16 gives 14 levels for 1 KiB, arity 512 gives 6 for 32 KiB).
func MaxLevel(blockSize int) int {
	arity := int64(blockSize / 64)
	span := int64(blockSize)
	for l := 0; ; l++ {
		if span > (1<<62)/arity {
			return l + 1
		}
		span *= arity
	}
}

// BlockSize is 1024 or 32768 (0 for the zero capability).
func (c ReadCapability) BlockSize() int { return c.blockSize }

// Level is the height of the tree: 0 when the root is the only leaf.
func (c ReadCapability) Level() int { return c.level }

// Root is the reference of the root block.
func (c ReadCapability) Root() Ref { return c.root }

// RootKey is the key that decrypts the root block.
func (c ReadCapability) RootKey() Key { return c.key }

// MaxSize is the most content c's tree can hold: a block of its size
// times its arity (block size / 64) to the power of its level, capped at
// math.MaxInt64. It bounds a content's size before any block is read.
func (c ReadCapability) MaxSize() int64 {
	n, arity := int64(c.blockSize), int64(c.blockSize/64)
	for range c.level {
		if n > math.MaxInt64/arity {
			return math.MaxInt64
		}
		n *= arity
	}
	return n
}

// IsZero reports whether c is the zero capability.
func (c ReadCapability) IsZero() bool { return c == ReadCapability{} }

// MarshalBinary returns the 66-byte binary form (spec §2.5.1).
func (c ReadCapability) MarshalBinary() ([]byte, error) {
	if c.IsZero() {
		return nil, fmt.Errorf("eris: marshal zero read capability")
	}
	return c.appendBinary(make([]byte, 0, capLen)), nil
}

func (c ReadCapability) appendBinary(b []byte) []byte {
	bits := byte(10)
	if c.blockSize == BlockSize32K {
		bits = 15
	}
	b = append(b, bits, byte(c.level))
	b = append(b, c.root[:]...)
	return append(b, c.key[:]...)
}

// UnmarshalBinary parses the 66-byte binary form.
func (c *ReadCapability) UnmarshalBinary(b []byte) error {
	p, err := parseBinary(b)
	if err != nil {
		return err
	}
	*c = p
	return nil
}

func parseBinary(b []byte) (ReadCapability, error) {
	if len(b) != capLen {
		return ReadCapability{}, fmt.Errorf("eris: %w: binary form of %d bytes, want %d", ErrMalformed, len(b), capLen)
	}
	var bs int
	switch b[0] {
	case 10:
		bs = BlockSize1K
	case 15:
		bs = BlockSize32K
	default:
		return ReadCapability{}, fmt.Errorf("eris: %w: unknown block size byte 0x%02x (want 0x0a or 0x0f)", ErrMalformed, b[0])
	}
	var root Ref
	var key Key
	copy(root[:], b[2:34])
	copy(key[:], b[34:66])
	return NewReadCapability(bs, int(b[1]), root, key)
}

// ParseURN parses `urn:eris:` followed by the unpadded base32 of the
// binary form. The prefix is matched case-insensitively, as URN schemes
// are (RFC 8141); the base32 must be upper case.
func ParseURN(s string) (ReadCapability, error) {
	if len(s) < len(URNPrefix) || !strings.EqualFold(s[:len(URNPrefix)], URNPrefix) {
		if strings.HasPrefix(strings.ToLower(s), "urn:erisx") {
			return ReadCapability{}, fmt.Errorf("eris: %w: %.20q… is a pre-1.0 ERIS URN (unsupported)", ErrMalformed, s)
		}
		return ReadCapability{}, fmt.Errorf("eris: %w: %.24q does not start with %q", ErrMalformed, s, URNPrefix)
	}
	text := s[len(URNPrefix):]
	const textLen = (capLen*8 + 4) / 5 // 106
	if len(text) != textLen {
		return ReadCapability{}, fmt.Errorf("eris: %w: %d base32 characters after %q, want %d", ErrMalformed, len(text), URNPrefix, textLen)
	}
	var b [capLen]byte
	n, err := b32.Decode(b[:], []byte(text))
	if err != nil {
		return ReadCapability{}, fmt.Errorf("eris: %w: bad base32 in URN: %v", ErrMalformed, err)
	}
	if n != capLen {
		return ReadCapability{}, fmt.Errorf("eris: %w: URN decodes to %d bytes, want %d", ErrMalformed, n, capLen)
	}
	return parseBinary(b[:])
}

// URN returns the `urn:eris:` form.
func (c ReadCapability) URN() string {
	if c.IsZero() {
		return ""
	}
	var b [capLen]byte
	return URNPrefix + b32.EncodeToString(c.appendBinary(b[:0]))
}

// String returns the URN.
func (c ReadCapability) String() string { return c.URN() }

// MarshalText implements encoding.TextMarshaler (the URN).
func (c ReadCapability) MarshalText() ([]byte, error) {
	if c.IsZero() {
		return nil, fmt.Errorf("eris: marshal zero read capability")
	}
	return []byte(c.URN()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (c *ReadCapability) UnmarshalText(b []byte) error {
	p, err := ParseURN(string(b))
	if err != nil {
		return err
	}
	*c = p
	return nil
}

// MarshalCBOR encodes c as tag 276 around its binary form (spec §2.5.2).
func (c ReadCapability) MarshalCBOR() ([]byte, error) {
	bin, err := c.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return cbor.Marshal(cbor.Tag{Number: CBORTag, Content: bin})
}

// UnmarshalCBOR decodes tag 276 around a 66-byte string.
func (c *ReadCapability) UnmarshalCBOR(data []byte) error {
	var raw cbor.RawTag
	if err := cbor.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("eris: %w: CBOR: %v", ErrMalformed, err)
	}
	if raw.Number != CBORTag {
		return fmt.Errorf("eris: %w: CBOR tag %d, want %d", ErrMalformed, raw.Number, CBORTag)
	}
	var bin []byte
	if err := cbor.Unmarshal(raw.Content, &bin); err != nil {
		return fmt.Errorf("eris: %w: CBOR tag %d content is not a byte string: %v", ErrMalformed, CBORTag, err)
	}
	return c.UnmarshalBinary(bin)
}
