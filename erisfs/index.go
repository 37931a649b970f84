package erisfs

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"erismount/eris"
)

// The index format (ERIS-FS, "ERIS-FS Index"; our notes in
// specs/eris-fs.md), in CDDL:
//
//	eris-fs-index = #6.1701996916 [ version: 1, { * path => entry } ]
//	path  = [ * tstr ]
//	entry = [ 0, read-capability ] / [ 1, read-capability ] / [ 2, tstr ]
//
// encoded deterministically (RFC 8949 §4.2.1). Directories are implied by
// the paths of their entries.
const (
	// IndexTag is the CBOR tag of an ERIS-FS index, registered with IANA
	// as "ERIS-FS image header".
	IndexTag = 1701996916
	// IndexVersion is the only version of the index this package reads
	// and writes.
	IndexVersion = 1
)

// Entry types of the index (ERIS-FS CDDL: file-entry, executable-entry,
// symlink-entry).
const (
	typeRegular    = 0
	typeExecutable = 1
	typeSymlink    = 2
)

// item is one entry of an index: a path and what is there. The empty path
// is a tree whose root is that single file or symlink.
type item struct {
	path   []string
	kind   Kind // Regular, Executable or Symlink
	cap    eris.ReadCapability
	target string
}

// pathKey holds the CBOR encoding of a path. As a Go map key it lets the
// CBOR library sort the index map by the bytewise order of the encoded keys
// (RFC 8949 §4.2.1) and report duplicates, although a CBOR array cannot be
// a Go map key itself.
type pathKey string

func (k pathKey) MarshalCBOR() ([]byte, error) { return []byte(k), nil }

func (k *pathKey) UnmarshalCBOR(b []byte) error {
	*k = pathKey(b) // copies
	return nil
}

// rawEntry is an entry array before its content is interpreted by type.
type rawEntry struct {
	_       struct{} `cbor:",toarray"`
	Type    uint64
	Content cbor.RawMessage
}

type indexBody struct {
	_       struct{} `cbor:",toarray"`
	Version uint64
	Entries map[pathKey]rawEntry
}

// codec holds the CBOR modes of one encoding or decoding: core
// deterministic encoding, and decoding bounded by the limits.
type codec struct {
	limits Limits
	enc    cbor.EncMode
	dec    cbor.DecMode // the index structure
	text   cbor.DecMode // paths and targets: invalid UTF-8 is decoded, then reported with its path
}

func newCodec(l Limits, strict bool) (*codec, error) {
	l = l.withDefaults()
	eo := cbor.CoreDetEncOptions()
	eo.NilContainers = cbor.NilContainerAsEmpty // the root path is [], never null
	enc, err := eo.EncMode()
	if err != nil {
		return nil, fmt.Errorf("erisfs: CBOR encoder: %w", err)
	}
	indef := cbor.IndefLengthAllowed
	if strict {
		indef = cbor.IndefLengthForbidden
	}
	do := cbor.DecOptions{
		DupMapKey:          cbor.DupMapKeyEnforcedAPF,
		IndefLength:        indef,
		MaxMapPairs:        max(16, l.MaxEntries),
		MaxArrayElements:   max(16, l.MaxDepth),
		MaxNestedLevels:    32,
		ByteStringToString: cbor.ByteStringToStringForbidden,
	}
	dec, err := do.DecMode()
	if err != nil {
		return nil, fmt.Errorf("erisfs: CBOR decoder: %w", err)
	}
	do.UTF8 = cbor.UTF8DecodeInvalid
	text, err := do.DecMode()
	if err != nil {
		return nil, fmt.Errorf("erisfs: CBOR decoder: %w", err)
	}
	return &codec{limits: l, enc: enc, dec: dec, text: text}, nil
}

// marshal encodes items as an index. Paths must be distinct and valid.
func (c *codec) marshal(items []item) ([]byte, error) {
	m := make(map[pathKey]rawEntry, len(items))
	for _, it := range items {
		k, err := c.enc.Marshal(it.path)
		if err != nil {
			return nil, fmt.Errorf("erisfs: encode path %q: %w", joinPath(it.path), err)
		}
		e, err := c.entry(it)
		if err != nil {
			return nil, err
		}
		m[pathKey(k)] = e
	}
	if len(m) != len(items) {
		return nil, fmt.Errorf("erisfs: encode index: %d entries for %d paths (duplicate paths)", len(m), len(items))
	}
	b, err := c.enc.Marshal(cbor.Tag{Number: IndexTag, Content: indexBody{Version: IndexVersion, Entries: m}})
	if err != nil {
		return nil, fmt.Errorf("erisfs: encode index: %w", err)
	}
	return b, nil
}

// entry is the index entry of it.
func (c *codec) entry(it item) (rawEntry, error) {
	var e rawEntry
	var err error
	switch it.kind {
	case Regular, Executable:
		e.Type = typeRegular
		if it.kind == Executable {
			e.Type = typeExecutable
		}
		e.Content, err = it.cap.MarshalCBOR()
	case Symlink:
		e.Type = typeSymlink
		e.Content, err = c.enc.Marshal(it.target)
	default:
		err = fmt.Errorf("kind %v has no index entry", it.kind)
	}
	if err != nil {
		return rawEntry{}, fmt.Errorf("erisfs: encode entry %q: %w", joinPath(it.path), err)
	}
	return e, nil
}

// badIndex is an error about the index as a whole, not one path.
func badIndex(format string, args ...any) error {
	return fmt.Errorf("erisfs: %w: %s", ErrInvalidIndex, fmt.Sprintf(format, args...))
}

// indexPrefix is how every deterministically encoded index starts: tag
// 1701996916 (0xda 0x65726974), an array of 2, version 1. The entries map
// follows.
var indexPrefix = [...]byte{0xda, 0x65, 0x72, 0x69, 0x74, 0x82, 0x01}

// decodedIndex is a decoded index with, for the check of its encoding, where
// each entry's key and value were.
type decodedIndex struct {
	items  []item
	prefix bool     // the bytes before the entries map are indexPrefix
	head   bool     // the map's head is in its shortest form
	keys   [][]byte // raw key of items[i], in the order of the index
	values [][]byte
}

// decode parses an index into its items, checking everything that can be
// checked one entry at a time. Relations between entries (duplicates, a
// file used as a directory, entry count with directories) are checked when
// the tree is built, the deterministic encoding by checkCanonical.
//
// The entries map is walked pair by pair, in the order of the index, so
// that its order can be checked; the CBOR library decodes each key and
// value (UnmarshalFirst).
func (c *codec) decode(data []byte) (*decodedIndex, error) {
	if int64(len(data)) > c.limits.MaxIndexSize {
		return nil, fmt.Errorf("erisfs: %w: index of %d bytes, limit %d", ErrLimit, len(data), c.limits.MaxIndexSize)
	}
	var tag cbor.RawTag
	if err := c.dec.Unmarshal(data, &tag); err != nil {
		return nil, c.cborError(err)
	}
	if tag.Number != IndexTag {
		return nil, badIndex("CBOR tag %d, want %d (ERIS-FS image header)", tag.Number, IndexTag)
	}
	var top []cbor.RawMessage
	if err := c.dec.Unmarshal(tag.Content, &top); err != nil {
		return nil, badIndex("tag content is not an array [version, entries]: %v", err)
	}
	if len(top) != 2 {
		return nil, badIndex("array of %d items, want 2 [version, entries]", len(top))
	}
	var version uint64
	if err := c.dec.Unmarshal(top[0], &version); err != nil {
		return nil, badIndex("version is not an unsigned integer: %v", err)
	}
	if version != IndexVersion {
		return nil, badIndex("unsupported version %d, want %d", version, IndexVersion)
	}
	body := []byte(top[1]) // the last item: a suffix of data
	n, headLen, shortest, err := mapHead(body)
	if err != nil {
		return nil, badIndex("entries: %v", err)
	}
	ri := &decodedIndex{
		prefix: bytes.Equal(data[:len(data)-len(body)], indexPrefix[:]),
		head:   shortest,
		items:  make([]item, 0, max(n, 0)),
	}
	rest := body[headLen:]
	for i := 0; n < 0 && len(rest) > 0 && rest[0] != 0xff || i < n; i++ {
		var comps []string
		after, err := c.text.UnmarshalFirst(rest, &comps)
		if err != nil {
			return nil, badIndex("map key %d (0x%x…) is not a path (array of text strings): %v", i, truncate(rest), err)
		}
		key := rest[:len(rest)-len(after)]
		var e rawEntry
		rest, err = c.dec.UnmarshalFirst(after, &e)
		if err != nil {
			return nil, invalid(joinPath(comps), "entry is not [type, content]: %v", err)
		}
		value := after[:len(after)-len(rest)]
		it, err := c.decodeEntry(comps, e)
		if err != nil {
			return nil, err
		}
		ri.items = append(ri.items, it)
		ri.keys = append(ri.keys, key)
		ri.values = append(ri.values, value)
	}
	return ri, nil
}

// mapHead reads the head of a CBOR map (RFC 8949 §3: major type 5): the
// number of pairs (-1 for an indefinite length), the head's length, and
// whether it is in its shortest form (§4.2.1).
func mapHead(b []byte) (n, size int, shortest bool, err error) {
	if len(b) == 0 || b[0]>>5 != 5 {
		return 0, 0, false, errors.New("not a map")
	}
	ai := b[0] & 0x1f
	switch {
	case ai < 24:
		return int(ai), 1, true, nil
	case ai == 31:
		return -1, 1, false, nil
	case ai > 27:
		return 0, 0, false, fmt.Errorf("malformed map head 0x%02x", b[0])
	}
	size = 1 + 1<<(ai-24) // 1, 2, 4 or 8 bytes of length
	if len(b) < size {
		return 0, 0, false, errors.New("truncated map head")
	}
	var v uint64
	for _, x := range b[1:size] {
		v = v<<8 | uint64(x)
	}
	// The CBOR library has checked the map against MaxMapPairs already.
	if v > 1<<31 {
		return 0, 0, false, fmt.Errorf("map of %d pairs", v)
	}
	min := [...]uint64{24, 1 << 8, 1 << 16, 1 << 32}[ai-24]
	return int(v), size, v >= min, nil
}

// cborError translates the CBOR library's errors, naming the path of a
// duplicate key.
func (c *codec) cborError(err error) error {
	var dup *cbor.DupMapKeyError
	if errors.As(err, &dup) {
		if k, ok := dup.Key.(pathKey); ok {
			var comps []string
			if c.text.Unmarshal([]byte(k), &comps) == nil {
				return invalid(joinPath(comps), "duplicate path")
			}
		}
		return badIndex("duplicate map key: %v", err)
	}
	var pairs *cbor.MaxMapPairsError
	if errors.As(err, &pairs) {
		return fmt.Errorf("erisfs: %w: more than %d entries in the index", ErrLimit, c.limits.MaxEntries)
	}
	var elems *cbor.MaxArrayElementsError
	if errors.As(err, &elems) {
		return fmt.Errorf("erisfs: %w: an array longer than %d (paths deeper than MaxDepth)", ErrLimit, max(16, c.limits.MaxDepth))
	}
	return badIndex("%v", err)
}

func (c *codec) decodeEntry(comps []string, e rawEntry) (item, error) {
	p := func() string { return joinPath(comps) }
	if len(comps) > c.limits.MaxDepth {
		return item{}, overLimit(p(), "%d components, limit %d", len(comps), c.limits.MaxDepth)
	}
	for _, name := range comps {
		if why := checkName(name); why != "" {
			return item{}, &PathError{Path: p(), Reason: fmt.Sprintf("%s (component %q)", why, name), Err: ErrInvalidIndex, comps: comps}
		}
		if len(name) > c.limits.MaxNameLen {
			return item{}, overLimit(p(), "component of %d bytes, limit %d", len(name), c.limits.MaxNameLen)
		}
	}
	it := item{path: comps}
	switch e.Type {
	case typeRegular, typeExecutable:
		it.kind = Regular
		if e.Type == typeExecutable {
			it.kind = Executable
		}
		if err := it.cap.UnmarshalCBOR(e.Content); err != nil {
			return item{}, invalid(p(), "read capability: %v", err)
		}
	case typeSymlink:
		it.kind = Symlink
		if err := c.text.Unmarshal(e.Content, &it.target); err != nil {
			return item{}, invalid(p(), "symlink target is not a text string: %v", err)
		}
		if why := checkTarget(it.target); why != "" {
			return item{}, invalid(p(), "%s", why)
		}
		if len(it.target) > c.limits.MaxTargetLen {
			return item{}, overLimit(p(), "symlink target of %d bytes, limit %d", len(it.target), c.limits.MaxTargetLen)
		}
	default:
		return item{}, invalid(p(), "unknown entry type %d (want 0 file, 1 executable, 2 symlink)", e.Type)
	}
	return it, nil
}

// checkCanonical requires the deterministic encoding (RFC 8949 §4.2.1:
// shortest forms, definite lengths, map keys sorted by the bytewise order
// of their encodings, and here nothing the index does not need, such as
// extra tags): the prefix and map head are checked as bytes, the keys'
// order by comparing them, and each key and value by encoding what was
// decoded from it again. The ERIS-FS text requires deterministic CBOR;
// being strict also makes the index bytes — and so the tree's URN — a
// function of the tree alone.
func (c *codec) checkCanonical(ri *decodedIndex) error {
	if !ri.prefix || !ri.head {
		return badIndex("not deterministically encoded (RFC 8949 §4.2.1): the header is not %x followed by a map head in shortest form", indexPrefix)
	}
	for i, it := range ri.items {
		if i > 0 && bytes.Compare(ri.keys[i-1], ri.keys[i]) >= 0 {
			return invalid(joinPath(it.path), "not deterministically encoded (RFC 8949 §4.2.1): map key not after the previous one in bytewise order")
		}
		key, err := c.enc.Marshal(it.path)
		if err != nil {
			return err
		}
		e, err := c.entry(it)
		if err != nil {
			return err
		}
		value, err := c.enc.Marshal(e)
		if err != nil {
			return err
		}
		if !bytes.Equal(key, ri.keys[i]) || !bytes.Equal(value, ri.values[i]) {
			return invalid(joinPath(it.path), "not deterministically encoded (RFC 8949 §4.2.1): entry is not in its shortest, definite-length form")
		}
	}
	return nil
}

func truncate(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}
