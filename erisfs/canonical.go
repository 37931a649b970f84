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
// else (see above).
func (c *codec) decodeCanonical(data []byte) ([]item, bool) {
	return c.decodeCanonicalStream(func(int) ([]byte, bool) { return data, true }, nil)
}

// fastTree is what the fast path made of an index: its tree, if ok.
type fastTree struct {
	root *Entry
	all  []*Entry
	ok   bool
}

// buildCanonical builds the tree of an index in the deterministic encoding
// as its bytes arrive (see decodeCanonicalStream), each item as soon as it
// is here. Not ok means the general path must decode it: it is not in the
// deterministic encoding, or not valid (the general path says why).
func (c *codec) buildCanonical(more func(have int) ([]byte, bool)) fastTree {
	var b *builder
	start := func(n, alloc int) func(item) bool {
		b = newBuilder(n, alloc, c.limits)
		return func(it item) bool { return b.add(it) == nil }
	}
	if _, ok := c.decodeCanonicalStream(more, start); !ok {
		return fastTree{}
	}
	root, all, err := b.finish()
	return fastTree{root: root, all: all, ok: err == nil}
}

// decodeCanonicalStream is decodeCanonical over an index whose bytes arrive
// in order (see Open): more(n) waits until more than n bytes are here and
// returns them, or returns all of them and true once the index is
// complete. Once the number of items n is known, start (if not nil) is
// called with it and with how many of them may be allocated for at once
// (alloc ≤ n: n is not trusted yet); each item is then passed to the
// function it returns once its bytes are here, which returning false stops
// the decoding (false).
// Names and targets are substrings of copies of the bytes, one copy for
// each part that arrives.
func (c *codec) decodeCanonicalStream(more func(have int) ([]byte, bool), start func(n, alloc int) func(item) bool) ([]item, bool) {
	l := c.limits
	data, final := more(0)
	for len(data) < len(indexPrefix)+9 && !final {
		data, final = more(len(data))
	}
	if final && int64(len(data)) > l.MaxIndexSize || !bytes.HasPrefix(data, indexPrefix[:]) {
		return nil, false
	}
	n, i, ok := canonicalHead(data, len(indexPrefix), 5)
	// No entry is shorter than 6 bytes (["a"] => [2, "a"]): the room the
	// bytes can have (their capacity, the whole index while it arrives)
	// bounds what is allocated for a count they cannot hold.
	room := uint64(max(cap(data)-i, 0)) / 6
	if !ok || n > uint64(l.MaxEntries) || final && n > uint64(len(data)-i)/6 {
		return nil, false
	}
	items := make([]item, 0, min(n, room))
	comps := make([]string, 0, min(4*n, room))
	var add func(item) bool
	if start != nil {
		add = start(int(n), int(min(n, room)))
	}
	text, base := string(data[i:]), i
	var prev []byte
	for range n {
		for {
			first := len(comps)
			it, next, ok := c.canonicalItem(data, i, text, base, prev, &comps)
			if ok {
				prev, i = data[i:next], next
				items = append(items, it)
				break
			}
			comps = comps[:first]
			if final {
				return nil, false
			}
			// The item may be cut short by the end of what is here.
			data, final = more(len(data))
			text, base = string(data[i:]), i
		}
		if add != nil && !add(items[len(items)-1]) {
			return nil, false
		}
	}
	for !final {
		data, final = more(len(data))
	}
	return items, i == len(data) && int64(len(data)) <= l.MaxIndexSize
}

// canonicalItem reads the key and value of the item at data[i:] (text is
// data[base:] as a string), whose key must come after prev, appending its
// path's components to comps; it returns the offset after it.
func (c *codec) canonicalItem(data []byte, i int, text string, base int, prev []byte, comps *[]string) (item, int, bool) {
	l := c.limits
	var it item
	// The key: an array of text strings.
	start := i
	depth, j, ok := canonicalHead(data, i, 4)
	if !ok || depth > uint64(l.MaxDepth) {
		return it, 0, false
	}
	i = j
	first := len(*comps)
	for range depth {
		size, j, ok := canonicalHead(data, i, 3)
		if !ok || size > uint64(len(data)-j) || size > uint64(l.MaxNameLen) {
			return it, 0, false
		}
		name := text[j-base : j-base+int(size)]
		if checkName(name) != "" {
			return it, 0, false
		}
		*comps = append(*comps, name)
		i = j + int(size)
	}
	if prev != nil && bytes.Compare(prev, data[start:i]) >= 0 {
		return it, 0, false
	}
	it.path = (*comps)[first:len(*comps):len(*comps)]
	// The value: [type, content].
	if len(data)-i < 3 || data[i] != 0x82 {
		return it, 0, false
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
			return it, 0, false
		}
		rc, err := parseCapability(data[i+len(capPrefix) : end])
		if err != nil {
			return it, 0, false
		}
		it.cap = rc
		i = end
	case typeSymlink:
		it.kind = Symlink
		size, j, ok := canonicalHead(data, i+2, 3)
		if !ok || size > uint64(len(data)-j) || size > uint64(l.MaxTargetLen) {
			return it, 0, false
		}
		it.target = text[j-base : j-base+int(size)]
		if checkTarget(it.target) != "" {
			return it, 0, false
		}
		i = j + int(size)
	default:
		return it, 0, false
	}
	return it, i, true
}

// parseCapability is the binary form of a read capability.
func parseCapability(b []byte) (eris.ReadCapability, error) {
	var rc eris.ReadCapability
	err := rc.UnmarshalBinary(b)
	return rc, err
}
