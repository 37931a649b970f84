package narinfo

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Layout is the field order a narinfo is written in.
type Layout int

const (
	// Classic is what `guix publish` writes (spec §1.3): StorePath, the
	// URL / Compression / FileSize groups, NarHash, NarSize, ERIS and
	// ERIS-Nar (if any), References, System (if any), Deriver (if any), Signature.
	// Everything but the signature is signed.
	Classic Layout = iota
	// ERISv4 is the order of the v4 ERIS publish patches: StorePath,
	// NarHash, NarSize, ERIS, (ERIS-Nar,) References, System, Deriver,
	// Signature, and
	// only then the location groups, which are therefore unauthenticated
	// hints.
	ERISv4
)

func (l Layout) String() string {
	switch l {
	case Classic:
		return "classic"
	case ERISv4:
		return "eris-v4"
	}
	return fmt.Sprintf("Layout(%d)", int(l))
}

// Marshal writes the narinfo without a Guix signature (Nix Sig fields, if
// any, come last).
func (n *Narinfo) Marshal(l Layout) ([]byte, error) {
	signed, tail, err := n.parts(l)
	if err != nil {
		return nil, err
	}
	return append(signed, tail...), nil
}

// Sign writes the narinfo signed with k: the signed part, then
// `Signature: 1;<host>;<base64>`, then (ERISv4) the location groups and any
// Nix Sig fields. Signing is deterministic: the same narinfo and key give
// the same bytes as Guix's libgcrypt.
func (n *Narinfo) Sign(l Layout, k *PrivateKey, host string) ([]byte, error) {
	if host == "" || strings.ContainsAny(host, ";\n \t") {
		return nil, fmt.Errorf("narinfo: %w: host name %q for the Signature field", ErrSyntax, host)
	}
	signed, tail, err := n.parts(l)
	if err != nil {
		return nil, err
	}
	out := append(signed, "Signature: "+k.SignatureField(signed, host)+"\n"...)
	return append(out, tail...), nil
}

// parts returns the text above the Signature line and the text after it.
func (n *Narinfo) parts(l Layout) (signed, tail []byte, err error) {
	if err := n.check(); err != nil {
		return nil, nil, err
	}
	var s, t bytes.Buffer
	field := func(b *bytes.Buffer, name, value string) { b.WriteString(name + ": " + value + "\n") }
	locations := func(b *bytes.Buffer) {
		for _, loc := range n.Locations {
			field(b, "URL", loc.URL)
			if loc.Compression != "" {
				field(b, "Compression", loc.Compression)
			}
			if loc.FileHash != "" {
				field(b, "FileHash", loc.FileHash)
			}
			if loc.FileSize > 0 {
				field(b, "FileSize", strconv.FormatInt(loc.FileSize, 10))
			}
		}
	}
	field(&s, "StorePath", n.StorePath)
	switch l {
	case Classic:
		locations(&s)
	case ERISv4:
		locations(&t)
	default:
		return nil, nil, fmt.Errorf("narinfo: unknown layout %v", l)
	}
	field(&s, "NarHash", n.NarHash.String())
	field(&s, "NarSize", strconv.FormatInt(n.NarSize, 10))
	if !n.ERIS.IsZero() {
		field(&s, "ERIS", n.ERIS.URN())
	}
	if !n.ERISNar.IsZero() {
		field(&s, "ERIS-Nar", n.ERISNar.String())
	}
	// With no references the line is "References: " with its trailing
	// space, which is part of the signed bytes (spec §1.3).
	field(&s, "References", strings.Join(n.References, " "))
	if n.System != "" {
		field(&s, "System", n.System)
	}
	if n.Deriver != "" {
		field(&s, "Deriver", n.Deriver)
	}
	for _, sig := range n.Sigs {
		field(&t, "Sig", sig)
	}
	return s.Bytes(), t.Bytes(), nil
}

// check validates what Marshal and Sign write, so that the output parses
// back to the same narinfo.
func (n *Narinfo) check() error {
	if _, _, err := SplitStorePath(n.StorePath); err != nil {
		return err
	}
	if n.NarHash.IsZero() || n.NarSize <= 0 {
		return fmt.Errorf("narinfo: %w: NarHash and NarSize must be set", ErrSyntax)
	}
	for _, r := range n.References {
		if err := CheckBaseName(r); err != nil {
			return err
		}
	}
	if n.Deriver != "" {
		if err := CheckBaseName(n.Deriver); err != nil {
			return err
		}
	}
	if !n.ERISNar.IsZero() {
		if err := checkCompression(n.ERISNar.Compression); err != nil {
			return fmt.Errorf("narinfo: %w: ERIS-Nar: %v", ErrSyntax, err)
		}
	}
	values := []string{n.System}
	sizes, hashes := 0, 0
	for _, loc := range n.Locations {
		if loc.URL == "" || strings.ContainsAny(loc.URL, " \t") || loc.Compression == "" || loc.FileSize < 0 {
			return fmt.Errorf("narinfo: %w: location %+v needs a URL without blanks and a Compression", ErrSyntax, loc)
		}
		if loc.FileSize > 0 {
			sizes++
		}
		if loc.FileHash != "" {
			hashes++
		}
		values = append(values, loc.URL, loc.Compression, loc.FileHash)
	}
	// Guix pairs the i-th FileSize (FileHash) with the i-th URL: either
	// every location has one or none does.
	if sizes != 0 && sizes != len(n.Locations) || hashes != 0 && hashes != len(n.Locations) {
		return fmt.Errorf("narinfo: %w: FileSize and FileHash must be known for every location or for none", ErrSyntax)
	}
	values = append(values, n.Sigs...)
	for _, v := range values {
		if strings.ContainsAny(v, "\n\r\x00") || strings.Contains(v, "Signature:") || v != strings.TrimLeft(v, " \t") {
			return fmt.Errorf("narinfo: %w: value %q cannot be written", ErrSyntax, trim(v))
		}
	}
	return nil
}
