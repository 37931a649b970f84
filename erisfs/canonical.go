package erisfs

import (
	"bytes"
	"encoding/binary"

	"erismount/eris"
)

// The fast path of parse: an index in the deterministic encoding (RFC 8949
// §4.2.1), which every index of a real tree is, is read here in one pass
// over its bytes, checking the encoding as it goes, instead of decoding it
// with the CBOR library and encoding every entry again to compare
// (checkCanonical), which cost two thirds of Open's CPU.
//
// The grammar accepted is exactly what codec.marshal writes:
//
//	index = DA 65726974 82 01 map-head { key value }   (nothing after)
//	key   = array-head { text-head name }               (keys strictly increasing, bytewise)
//	value = 82 00 D9 0114 58 42 <66 bytes>              (file)
//	      / 82 01 D9 0114 58 42 <66 bytes>              (executable)
//	      / 82 02 text-head target                      (symlink)
//
// every head in its shortest form, with the checks of decodeEntry on names,
// targets, capabilities and limits. decodeCanonical only says yes or no: an
// index it refuses is decoded again by the general path (decode, then
// checkCanonical), which gives today's error for it, or accepts it if the
// fast path was stricter than it must be. So what parse accepts and
// refuses, and why, is what the general path says; FuzzDecodeCanonical
// checks that the fast path accepts nothing the general path refuses, with
// the same entries, and that it accepts every index marshal writes.

// canonicalHead reads a CBOR head of major type major at b[i:] in its
// shortest form (a definite length or value), returning its argument and
// the offset after it.
func canonicalHead(b []byte, i int, major byte) (uint64, int, bool) {
	if i >= len(b) || b[i]>>5 != major {
		return 0, 0, false
	}
	ai := b[i] & 0x1f
	i++
	var v, min uint64
	switch ai {
	case 24:
		if len(b)-i < 1 {
			return 0, 0, false
		}
		v, min, i = uint64(b[i]), 24, i+1
	case 25:
		if len(b)-i < 2 {
			return 0, 0, false
		}
		v, min, i = uint64(binary.BigEndian.Uint16(b[i:])), 1<<8, i+2
	case 26:
		if len(b)-i < 4 {
			return 0, 0, false
		}
		v, min, i = uint64(binary.BigEndian.Uint32(b[i:])), 1<<16, i+4
	case 27:
		if len(b)-i < 8 {
			return 0, 0, false
		}
		v, min, i = binary.BigEndian.Uint64(b[i:]), 1<<32, i+8
	default:
		if ai > 23 {
			return 0, 0, false // reserved, or an indefinite length
		}
		return uint64(ai), i, true
	}
	return v, i, v >= min
}

// capPrefix starts a read capability in its deterministic encoding: tag
// 276, a byte string of 66 bytes.
var capPrefix = [...]byte{0xd9, 0x01, 0x14, 0x58, 0x42}

// decodeCanonical returns the items of an index in the deterministic
// encoding that passes every check of decode, and true; false for anything
// else (see above). Names and targets share one copy of data.
func (c *codec) decodeCanonical(data []byte) ([]item, bool) {
	l := c.limits
	if int64(len(data)) > l.MaxIndexSize || !bytes.HasPrefix(data, indexPrefix[:]) {
		return nil, false
	}
	n, i, ok := canonicalHead(data, len(indexPrefix), 5)
	// No entry is shorter than 6 bytes (["a"] => [2, "a"]), so a count
	// the data cannot hold is refused before allocating for it.
	if !ok || n > uint64(l.MaxEntries) || n > uint64(len(data)-i)/6 {
		return nil, false
	}
	text := string(data)
	items := make([]item, n)
	// The components of all paths, in one array; ten per path at first.
	comps := make([]string, 0, min(10*n, uint64(len(data)-i)/2))
	var prev []byte
	for k := range items {
		// The key: an array of text strings.
		start := i
		depth, j, ok := canonicalHead(data, i, 4)
		if !ok || depth > uint64(l.MaxDepth) {
			return nil, false
		}
		i = j
		first := len(comps)
		for range depth {
			size, j, ok := canonicalHead(data, i, 3)
			if !ok || size > uint64(len(data)-j) || size > uint64(l.MaxNameLen) {
				return nil, false
			}
			name := text[j : j+int(size)]
			if checkName(name) != "" {
				return nil, false
			}
			comps = append(comps, name)
			i = j + int(size)
		}
		key := data[start:i]
		if prev != nil && bytes.Compare(prev, key) >= 0 {
			return nil, false
		}
		prev = key
		it := &items[k]
		it.path = comps[first:len(comps):len(comps)]
		// The value: [type, content].
		if len(data)-i < 3 || data[i] != 0x82 {
			return nil, false
		}
		switch data[i+1] {
		case typeRegular, typeExecutable:
			it.kind = Regular
			if data[i+1] == typeExecutable {
				it.kind = Executable
			}
			i += 2
			end := i + len(capPrefix) + 66
			if end > len(data) || !bytes.Equal(data[i:i+len(capPrefix)], capPrefix[:]) {
				return nil, false
			}
			rc, err := parseCapability(data[i+len(capPrefix) : end])
			if err != nil {
				return nil, false
			}
			it.cap = rc
			i = end
		case typeSymlink:
			it.kind = Symlink
			size, j, ok := canonicalHead(data, i+2, 3)
			if !ok || size > uint64(len(data)-j) || size > uint64(l.MaxTargetLen) {
				return nil, false
			}
			it.target = text[j : j+int(size)]
			if checkTarget(it.target) != "" {
				return nil, false
			}
			i = j + int(size)
		default:
			return nil, false
		}
	}
	return items, i == len(data)
}

// parseCapability is the binary form of a read capability.
func parseCapability(b []byte) (eris.ReadCapability, error) {
	var rc eris.ReadCapability
	err := rc.UnmarshalBinary(b)
	return rc, err
}
