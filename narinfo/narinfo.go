package narinfo

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"erismount/eris"
	"erismount/narinfo/nar"
)

// MaxSize is the largest narinfo Parse accepts.
const MaxSize = 64 << 10

var (
	// ErrSyntax is matched by every error about a malformed narinfo.
	ErrSyntax = errors.New("malformed narinfo")
	// ErrNoERIS means a narinfo has no ERIS field.
	ErrNoERIS = errors.New("narinfo has no ERIS field")
	// ErrERISUnsupported means a narinfo's ERIS field holds only pre-1.0
	// `urn:erisx2:` capabilities (the v1 patch's, one per compressed nar).
	ErrERISUnsupported = errors.New("unsupported ERIS capability (urn:erisx2:, pre-1.0)")
	// ErrNoERISNar means a narinfo has no ERIS-Nar field.
	ErrNoERISNar = errors.New("narinfo has no ERIS-Nar field")
)

// ERISNar is the value of the ERIS-Nar field, `ERIS-Nar: urn:eris:… zstd`:
// the item's nar, compressed with Compression, encoded as plain ERIS
// content (not ERIS-FS). It lets a whole item travel between untrusted
// peers at its compressed size. The field is signed (it must come above
// the Signature line); the nar it yields is still checked against the
// signed NarHash and NarSize after decompression, as any nar is.
//
// The zero value means "none".
type ERISNar struct {
	Capability eris.ReadCapability
	// Compression is the method the nar was compressed with, as in the
	// Compression field: none, gzip, bzip2, xz, zstd, lzip — or a method
	// this version does not know, which a reader treats as unusable.
	Compression string
}

// IsZero reports whether e is "none".
func (e ERISNar) IsZero() bool { return e.Capability.IsZero() }

// String returns the field's value, "<urn> <compression>".
func (e ERISNar) String() string { return e.Capability.URN() + " " + e.Compression }

// ParseERISNar parses the value of an ERIS-Nar field: a `urn:eris:` read
// capability, one space, and a compression method (lower-case letters and
// digits).
func ParseERISNar(v string) (ERISNar, error) {
	urn, comp, ok := strings.Cut(v, " ")
	if !ok {
		return ERISNar{}, fmt.Errorf("%q is not \"urn:eris:… <compression>\"", trim(v))
	}
	if err := checkCompression(comp); err != nil {
		return ERISNar{}, err
	}
	rc, err := eris.ParseURN(urn)
	if err != nil {
		return ERISNar{}, err
	}
	return ERISNar{Capability: rc, Compression: comp}, nil
}

func checkCompression(c string) error {
	if c == "" || len(c) > 16 || strings.Trim(c, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return fmt.Errorf("compression %q: want a method name such as zstd", trim(c))
	}
	return nil
}

// Location is one URL / Compression / FileSize (/ FileHash) group: where a
// nar can be downloaded. It is never authenticated by itself.
type Location struct {
	URL         string
	Compression string // "" when the narinfo does not say
	FileSize    int64  // size of the (compressed) file; 0 when unknown
	FileHash    string // "" when unknown
}

// Narinfo is a parsed narinfo (spec §1). A parsed Narinfo keeps the exact
// bytes it came from: signatures are checked against them, never against a
// re-serialization.
type Narinfo struct {
	StorePath  string // full path, e.g. /gnu/store/<hash>-hello-2.12
	Locations  []Location
	NarHash    nar.Hash
	NarSize    int64
	References []string // base names, in the order given
	Deriver    string   // base name, "" for none
	System     string
	// ERIS is the read capability of the item's ERIS-FS encoding (zero
	// for none); ERISUnsupported holds urn:erisx2: values, which are kept
	// but not usable.
	ERIS            eris.ReadCapability
	ERISUnsupported []string
	// ERISNar is the item's compressed nar as ERIS content (zero for
	// none); see NarCapability.
	ERISNar ERISNar
	// Signature is the value of the Guix Signature field,
	// "1;<host>;<base64>", "" for none.
	Signature string
	// Sigs are the values of Nix's Sig fields, "<key name>:<base64>".
	Sigs []string

	raw    []byte
	signed int // length of the signed part of raw; -1 when there is none
}

// identityFields are signed content: they must come before the Signature
// line and may not be repeated with another value (spec §1.3, §1.4).
var identityFields = map[string]bool{
	"StorePath": true, "NarHash": true, "NarSize": true, "ERIS": true, "References": true, "Deriver": true,
	"ERIS-Nar": true,
}

// Parse parses a narinfo. It is stricter than Guix wherever that is the
// safe direction: the text must be valid UTF-8 without CR or NUL, every
// line a `Name: value` field (no comments or continuation lines; empty
// lines only at the end), the `Signature:` marker at the start of a line;
// the security-relevant fields (StorePath, NarHash, NarSize, ERIS,
// ERIS-Nar, References, Deriver) must appear above the Signature line, and no
// single-valued field may be repeated with another value. The location
// fields (URL, Compression, FileSize, FileHash) may come after the
// signature, as the v4 ERIS publish writes them. Unknown fields are kept
// in the raw bytes and otherwise ignored.
func Parse(raw []byte) (*Narinfo, error) {
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("narinfo: %w: %d bytes exceeds %d", ErrSyntax, len(raw), MaxSize)
	}
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("narinfo: %w: not valid UTF-8", ErrSyntax)
	}
	if i := bytes.IndexAny(raw, "\r\x00"); i >= 0 {
		return nil, fmt.Errorf("narinfo: %w: byte %d: CR or NUL", ErrSyntax, i)
	}
	n := &Narinfo{raw: bytes.Clone(raw), signed: -1}
	if i := bytes.Index(raw, []byte("Signature:")); i >= 0 {
		if i > 0 && raw[i-1] != '\n' {
			return nil, fmt.Errorf("narinfo: %w: byte %d: \"Signature:\" inside a line (Guix would sign only the text before it)", ErrSyntax, i)
		}
		n.signed = i
	}
	p := fieldParser{n: n, single: map[string]string{}}
	if err := p.parse(raw); err != nil {
		return nil, err
	}
	return n, nil
}

type fieldParser struct {
	n                          *Narinfo
	single                     map[string]string // single-valued fields seen, by name
	urls, comps, sizes, hashes []string
}

func (p *fieldParser) parse(raw []byte) error {
	line, off := 0, 0
	ended := false // an empty line was seen
	for off < len(raw) {
		line++
		end := bytes.IndexByte(raw[off:], '\n')
		var l string
		if end < 0 {
			l, end = string(raw[off:]), len(raw)
		} else {
			l, end = string(raw[off:off+end]), off+end+1
		}
		start := off
		off = end
		if l == "" {
			ended = true
			continue
		}
		if ended {
			return p.errorf(line, "text after an empty line")
		}
		name, value, err := splitField(l)
		if err != nil {
			return p.errorf(line, "%v", err)
		}
		afterSig := p.n.signed >= 0 && start > p.n.signed
		if err := p.field(name, value, afterSig); err != nil {
			return p.errorf(line, "%v", err)
		}
	}
	return p.finish()
}

// splitField splits `Name: value`, trimming leading blanks of the value
// (trailing ones are part of it, as in Guix).
func splitField(l string) (string, string, error) {
	name, value, ok := strings.Cut(l, ":")
	if !ok || name == "" {
		return "", "", fmt.Errorf("not a `Name: value` field: %q", trim(l))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '-' || c == '_')) {
			return "", "", fmt.Errorf("bad field name %q", trim(name))
		}
	}
	return name, strings.TrimLeft(value, " \t"), nil
}

func (p *fieldParser) field(name, value string, afterSig bool) error {
	if identityFields[name] && afterSig {
		return fmt.Errorf("%s after the Signature line: it would not be authenticated", name)
	}
	switch name {
	case "URL":
		p.urls = append(p.urls, value)
		return nil
	case "Compression":
		p.comps = append(p.comps, value)
		return nil
	case "FileSize":
		p.sizes = append(p.sizes, value)
		return nil
	case "FileHash":
		p.hashes = append(p.hashes, value)
		return nil
	case "Sig":
		p.n.Sigs = append(p.n.Sigs, value)
		return nil
	case "ERIS":
		if strings.HasPrefix(value, "urn:erisx2:") {
			p.n.ERISUnsupported = append(p.n.ERISUnsupported, value)
			return nil
		}
	case "StorePath", "NarHash", "NarSize", "References", "Deriver", "System", "Signature", "ERIS-Nar":
	default:
		return nil // unknown fields are ignored, as by Guix
	}
	if prev, ok := p.single[name]; ok {
		if prev != value {
			return fmt.Errorf("%s repeated with another value", name)
		}
		return nil
	}
	p.single[name] = value
	return p.set(name, value)
}

func (p *fieldParser) set(name, value string) error {
	n := p.n
	var err error
	switch name {
	case "StorePath":
		_, _, err = SplitStorePath(value)
		n.StorePath = value
	case "NarHash":
		n.NarHash, err = nar.ParseHash(value)
	case "NarSize":
		n.NarSize, err = parseSize(value)
	case "References":
		n.References = strings.Fields(value)
		for _, r := range n.References {
			if err = CheckBaseName(r); err != nil {
				break
			}
		}
	case "Deriver":
		if value != "" {
			err = CheckBaseName(value)
		}
		n.Deriver = value
	case "System":
		n.System = value
	case "Signature":
		n.Signature = value
	case "ERIS":
		n.ERIS, err = eris.ParseURN(value)
	case "ERIS-Nar":
		n.ERISNar, err = ParseERISNar(value)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// parseSize parses a non-negative decimal integer without sign or
// leading zeros.
func parseSize(s string) (int64, error) {
	if s == "" || len(s) > 1 && s[0] == '0' || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a decimal size", trim(s))
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a decimal size", trim(s))
	}
	return v, nil
}

func (p *fieldParser) finish() error {
	n := p.n
	for _, f := range []string{"StorePath", "NarHash", "NarSize", "References"} {
		if _, ok := p.single[f]; !ok {
			where := ""
			if n.signed >= 0 {
				where = " above the Signature line"
			}
			return fmt.Errorf("narinfo: %w: no %s field%s", ErrSyntax, f, where)
		}
	}
	u := len(p.urls)
	if len(p.comps) != u && len(p.comps) != 0 {
		return fmt.Errorf("narinfo: %w: %d URL fields but %d Compression fields", ErrSyntax, u, len(p.comps))
	}
	if len(p.sizes) != u && len(p.sizes) != 0 {
		return fmt.Errorf("narinfo: %w: %d URL fields but %d FileSize fields", ErrSyntax, u, len(p.sizes))
	}
	if len(p.hashes) != u && len(p.hashes) != 0 {
		return fmt.Errorf("narinfo: %w: %d URL fields but %d FileHash fields", ErrSyntax, u, len(p.hashes))
	}
	for i, url := range p.urls {
		if url == "" || strings.ContainsAny(url, " \t") {
			return fmt.Errorf("narinfo: %w: URL %q", ErrSyntax, trim(url))
		}
		loc := Location{URL: url}
		if len(p.comps) > 0 {
			loc.Compression = p.comps[i]
		}
		if len(p.sizes) > 0 {
			size, err := parseSize(p.sizes[i])
			if err != nil {
				return fmt.Errorf("narinfo: %w: FileSize: %v", ErrSyntax, err)
			}
			loc.FileSize = size
		}
		if len(p.hashes) > 0 {
			loc.FileHash = p.hashes[i]
		}
		n.Locations = append(n.Locations, loc)
	}
	return nil
}

func (p *fieldParser) errorf(line int, format string, args ...any) error {
	return fmt.Errorf("narinfo: %w: line %d: %s", ErrSyntax, line, fmt.Sprintf(format, args...))
}

func trim(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// Raw returns the bytes the narinfo was parsed from (nil for one built in
// code). The caller must not modify them.
func (n *Narinfo) Raw() []byte { return n.raw }

// SignedPart returns the bytes a Guix signature covers: everything before
// the `Signature:` marker; ok is false if there is no marker.
func (n *Narinfo) SignedPart() (b []byte, ok bool) {
	if n.signed < 0 {
		return nil, false
	}
	return n.raw[:n.signed], true
}

// Sum returns NarHash and NarSize.
func (n *Narinfo) Sum() nar.Sum { return nar.Sum{Hash: n.NarHash, Size: n.NarSize} }

// BaseName returns the store item's base name, `<hash>-<name>`.
func (n *Narinfo) BaseName() string {
	_, base, _ := SplitStorePath(n.StorePath)
	return base
}

// StoreDir returns the store directory of StorePath, e.g. /gnu/store.
func (n *Narinfo) StoreDir() string {
	dir, _, _ := SplitStorePath(n.StorePath)
	return dir
}

// Capability returns the ERIS read capability, ErrNoERIS if there is none,
// or ErrERISUnsupported if there are only urn:erisx2: values.
func (n *Narinfo) Capability() (eris.ReadCapability, error) {
	switch {
	case !n.ERIS.IsZero():
		return n.ERIS, nil
	case len(n.ERISUnsupported) > 0:
		return eris.ReadCapability{}, fmt.Errorf("narinfo %s: %w: %s", n.StorePath, ErrERISUnsupported, trim(n.ERISUnsupported[0]))
	}
	return eris.ReadCapability{}, fmt.Errorf("narinfo %s: %w", n.StorePath, ErrNoERIS)
}

// Equivalent reports whether n and o describe the same store item content
// in Guix's sense (spec §1.7): same StorePath, NarHash, NarSize and
// References (in order). Locations, deriver and signatures do not count; an
// unsigned narinfo equivalent to an authorized one may serve as its mirror.
func (n *Narinfo) Equivalent(o *Narinfo) bool {
	return n.StorePath == o.StorePath && n.NarHash == o.NarHash && n.NarSize == o.NarSize &&
		slices.Equal(n.References, o.References)
}

// NarCapability returns the ERIS-Nar field — the capability of the item's
// compressed nar as ERIS content and its compression — or ErrNoERISNar.
// Like every field, it is authenticated only if Verify (or VerifyNix, which
// does not cover it: Nix signs a fingerprint, not the text) says so; a
// consumer checks the decompressed nar against NarHash and NarSize in any
// case.
func (n *Narinfo) NarCapability() (ERISNar, error) {
	if n.ERISNar.IsZero() {
		return ERISNar{}, fmt.Errorf("narinfo %s: %w", n.StorePath, ErrNoERISNar)
	}
	return n.ERISNar, nil
}
