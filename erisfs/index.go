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
		var e rawEntry
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
			return nil, fmt.Errorf("erisfs: encode entry %q: %w", joinPath(it.path), err)
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

// badIndex is an error about the index as a whole, not one path.
func badIndex(format string, args ...any) error {
	return fmt.Errorf("erisfs: %w: %s", ErrInvalidIndex, fmt.Sprintf(format, args...))
}

// decode parses an index into its items, checking everything that can be
// checked one entry at a time. Relations between entries (duplicates, a
// file used as a directory, entry count with directories) are checked when
// the tree is built; the canonical encoding by checkCanonical.
func (c *codec) decode(data []byte) ([]item, error) {
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
	var entries map[pathKey]cbor.RawMessage
	if err := c.dec.Unmarshal(top[1], &entries); err != nil {
		return nil, c.cborError(err)
	}
	items := make([]item, 0, len(entries))
	for k, e := range entries {
		it, err := c.decodeEntry(k, e)
		if err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, nil
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

func (c *codec) decodeEntry(k pathKey, raw cbor.RawMessage) (item, error) {
	var comps []string
	if err := c.text.Unmarshal([]byte(k), &comps); err != nil {
		return item{}, badIndex("map key 0x%x is not a path (array of text strings): %v", truncate([]byte(k)), err)
	}
	p := joinPath(comps)
	if len(comps) > c.limits.MaxDepth {
		return item{}, overLimit(p, "%d components, limit %d", len(comps), c.limits.MaxDepth)
	}
	for _, name := range comps {
		if why := checkName(name); why != "" {
			return item{}, &PathError{Path: p, Reason: fmt.Sprintf("%s (component %q)", why, name), Err: ErrInvalidIndex, comps: comps}
		}
		if len(name) > c.limits.MaxNameLen {
			return item{}, overLimit(p, "component of %d bytes, limit %d", len(name), c.limits.MaxNameLen)
		}
	}
	var e rawEntry
	if err := c.dec.Unmarshal(raw, &e); err != nil {
		return item{}, invalid(p, "entry is not [type, content]: %v", err)
	}
	it := item{path: comps}
	switch e.Type {
	case typeRegular, typeExecutable:
		it.kind = Regular
		if e.Type == typeExecutable {
			it.kind = Executable
		}
		if err := it.cap.UnmarshalCBOR(e.Content); err != nil {
			return item{}, invalid(p, "read capability: %v", err)
		}
	case typeSymlink:
		it.kind = Symlink
		if err := c.text.Unmarshal(e.Content, &it.target); err != nil {
			return item{}, invalid(p, "symlink target is not a text string: %v", err)
		}
		if why := checkTarget(it.target); why != "" {
			return item{}, invalid(p, "%s", why)
		}
		if len(it.target) > c.limits.MaxTargetLen {
			return item{}, overLimit(p, "symlink target of %d bytes, limit %d", len(it.target), c.limits.MaxTargetLen)
		}
	default:
		return item{}, invalid(p, "unknown entry type %d (want 0 file, 1 executable, 2 symlink)", e.Type)
	}
	return it, nil
}

// checkCanonical re-encodes items, which were decoded from data, and
// requires the same bytes: the index must be the deterministic encoding
// (RFC 8949 §4.2.1: shortest forms, definite lengths, keys sorted
// bytewise) and hold nothing the items do not (no extra tags). The
// ERIS-FS text requires deterministic CBOR; being strict also makes the
// index bytes — and so the tree's URN — a function of the tree alone.
func (c *codec) checkCanonical(data []byte, items []item) error {
	want, err := c.marshal(items)
	if err != nil {
		return err
	}
	if bytes.Equal(want, data) {
		return nil
	}
	i := 0
	for i < len(want) && i < len(data) && want[i] == data[i] {
		i++
	}
	return badIndex("not deterministically encoded (RFC 8949 §4.2.1): first difference at byte %d of %d", i, len(data))
}

func truncate(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}
