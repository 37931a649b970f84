// Package sexp reads and writes the S-expressions of libgcrypt, in which
// Guix writes keys, signatures and its ACL (specs/guix-substitutes.md §1.5,
// §1.6).
//
// Parse accepts the canonical form (`(3:abc)`) and the advanced text form
// with every atom encoding libgcrypt reads: tokens, "quoted strings",
// #hex#, |base64| and verbatim `N:bytes`. Display hints and the `{…}`
// transport form are refused. Advanced prints exactly what libgcrypt's
// gcry_sexp_sprint(GCRYSEXP_FMT_ADVANCED) prints, so keys and signatures
// written here are byte-identical to Guix's.
//
//	v, err := sexp.Parse(keyFile)
//	q, ok := v.Find("q") // (q #B560…#)
//	key := q.Nth(1).Bytes()
//	os.Stdout.Write(v.Advanced())
package sexp

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxDepth bounds the nesting Parse accepts.
const MaxDepth = 64

// Value is an atom (a byte string) or a list of values. The zero value is
// the empty atom.
type Value struct {
	atom   []byte
	list   []Value
	isList bool
}

// Atom returns an atom holding b.
func Atom(b []byte) Value { return Value{atom: bytes.Clone(b)} }

// Token returns an atom holding s.
func Token(s string) Value { return Value{atom: []byte(s)} }

// List returns a list of items.
func List(items ...Value) Value { return Value{list: items, isList: true} }

// IsList reports whether v is a list.
func (v Value) IsList() bool { return v.isList }

// Bytes returns an atom's bytes, or nil for a list.
func (v Value) Bytes() []byte { return v.atom }

// String returns an atom's bytes as a string ("" for a list).
func (v Value) String() string { return string(v.atom) }

// Len returns the number of items of a list (0 for an atom).
func (v Value) Len() int { return len(v.list) }

// Items returns the items of a list.
func (v Value) Items() []Value { return v.list }

// Nth returns item i of a list, or the zero Value if there is none.
func (v Value) Nth(i int) Value {
	if i < 0 || i >= len(v.list) {
		return Value{}
	}
	return v.list[i]
}

// Head returns the first item of a list as a string when it is an atom.
func (v Value) Head() string {
	if len(v.list) == 0 || v.list[0].isList {
		return ""
	}
	return string(v.list[0].atom)
}

// Find returns the first list, in depth-first order starting with v
// itself, whose head is the atom name — what libgcrypt's
// gcry_sexp_find_token (and so Guix's find-sexp-token) returns; ok is false
// if there is none.
func (v Value) Find(name string) (Value, bool) {
	if !v.isList {
		return Value{}, false
	}
	if v.Head() == name {
		return v, true
	}
	for _, it := range v.list {
		if f, ok := it.Find(name); ok {
			return f, true
		}
	}
	return Value{}, false
}

// Equal reports whether a and b have the same structure and atoms.
func Equal(a, b Value) bool {
	if a.isList != b.isList {
		return false
	}
	if !a.isList {
		return bytes.Equal(a.atom, b.atom)
	}
	if len(a.list) != len(b.list) {
		return false
	}
	for i := range a.list {
		if !Equal(a.list[i], b.list[i]) {
			return false
		}
	}
	return true
}

// Canonical returns the canonical encoding: no whitespace, every atom as
// `length:bytes`.
func (v Value) Canonical() []byte { return v.appendCanonical(nil) }

func (v Value) appendCanonical(b []byte) []byte {
	if !v.isList {
		b = strconv.AppendInt(b, int64(len(v.atom)), 10)
		b = append(b, ':')
		return append(b, v.atom...)
	}
	b = append(b, '(')
	for _, it := range v.list {
		b = it.appendCanonical(b)
	}
	return append(b, ')')
}

// Advanced returns the text libgcrypt prints in its advanced format,
// newline-terminated (spec §1.5 describes the layout).
func (v Value) Advanced() []byte {
	p := printer{}
	if v.isList {
		p.list(v, false)
	} else {
		p.atom(v.atom)
	}
	return append(p.b, '\n')
}

type printer struct {
	b      []byte
	indent int
}

// list prints v. libgcrypt ends a list with a newline and indentation
// unless '(' or the end of the whole expression follows it; the caller says
// whether that is so (newline).
func (p *printer) list(v Value, newline bool) {
	if p.indent > 0 {
		p.b = append(p.b, '\n')
		p.b = append(p.b, strings.Repeat(" ", p.indent)...)
	}
	p.b = append(p.b, '(')
	p.indent++
	for i, it := range v.list {
		end := i == len(v.list)-1
		if it.isList {
			p.list(it, end || !v.list[i+1].isList)
			continue
		}
		p.atom(it.atom)
		if !end { // an atom is followed by a space unless ')' comes next
			p.b = append(p.b, ' ')
		}
	}
	p.b = append(p.b, ')')
	p.indent--
	if newline {
		p.b = append(p.b, '\n')
		p.b = append(p.b, strings.Repeat(" ", p.indent)...)
	}
}

func (p *printer) atom(a []byte) {
	switch encoding(a) {
	case token:
		p.b = append(p.b, a...)
	case quoted:
		p.b = appendQuoted(p.b, a)
	default:
		p.b = append(p.b, '#')
		p.b = append(p.b, strings.ToUpper(fmt.Sprintf("%x", a))...)
		p.b = append(p.b, '#')
	}
}

const (
	hexAtom = iota
	quoted
	token
)

// tokenSpecials are the non-alphanumeric bytes a token may hold.
const tokenSpecials = "-./_:*+="

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isTokenByte(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte(tokenSpecials, c) >= 0
}

// encoding picks how libgcrypt prints an atom (its suitable_encoding).
func encoding(a []byte) int {
	if len(a) == 0 {
		return quoted
	}
	if a[0]&0x80 != 0 || a[0] == 0 {
		return hexAtom
	}
	maybeToken := true
	for _, c := range a {
		if (c < 0x20 || c >= 0x7f && c <= 0xa0) && strings.IndexByte("\b\t\v\n\f\r\"'\\", c) < 0 {
			return hexAtom
		}
		if maybeToken && !isTokenByte(c) {
			maybeToken = false
		}
	}
	if maybeToken && !isDigit(a[0]) {
		return token
	}
	return quoted
}

func appendQuoted(b, a []byte) []byte {
	b = append(b, '"')
	for _, c := range a {
		switch c {
		case '\b':
			b = append(b, `\b`...)
		case '\t':
			b = append(b, `\t`...)
		case '\v':
			b = append(b, `\v`...)
		case '\n':
			b = append(b, `\n`...)
		case '\f':
			b = append(b, `\f`...)
		case '\r':
			b = append(b, `\r`...)
		case '"':
			b = append(b, `\"`...)
		case '\'':
			b = append(b, `\'`...)
		case '\\':
			b = append(b, `\\`...)
		default:
			if c < 0x20 || c >= 0x7f && c <= 0xa0 {
				b = fmt.Appendf(b, `\x%02x`, c)
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}

// ErrSyntax is matched by every parse error.
var ErrSyntax = errors.New("s-expression syntax error")

// SyntaxError names where and why parsing failed.
type SyntaxError struct {
	Offset int
	Reason string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("sexp: syntax error at byte %d: %s", e.Offset, e.Reason)
}

// Is makes a SyntaxError match ErrSyntax.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }

// Parse parses one S-expression, which must be a list, optionally
// surrounded by whitespace.
func Parse(b []byte) (Value, error) {
	p := parser{b: b}
	p.space()
	if p.i >= len(b) || b[p.i] != '(' {
		return Value{}, p.errorf("expected '('")
	}
	v, err := p.value(0)
	if err != nil {
		return Value{}, err
	}
	p.space()
	if p.i != len(b) {
		return Value{}, p.errorf("data after the expression")
	}
	return v, nil
}

type parser struct {
	b []byte
	i int
}

func (p *parser) errorf(format string, args ...any) error {
	return &SyntaxError{Offset: p.i, Reason: fmt.Sprintf(format, args...)}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func (p *parser) space() {
	for p.i < len(p.b) && isSpace(p.b[p.i]) {
		p.i++
	}
}

// value parses a list or an atom at p.i (whitespace already skipped).
func (p *parser) value(depth int) (Value, error) {
	if p.i >= len(p.b) {
		return Value{}, p.errorf("unexpected end")
	}
	c := p.b[p.i]
	switch {
	case c == '(':
		if depth >= MaxDepth {
			return Value{}, p.errorf("nested deeper than %d", MaxDepth)
		}
		p.i++
		v := Value{isList: true}
		for {
			p.space()
			if p.i >= len(p.b) {
				return Value{}, p.errorf("unclosed list")
			}
			if p.b[p.i] == ')' {
				p.i++
				return v, nil
			}
			it, err := p.value(depth + 1)
			if err != nil {
				return Value{}, err
			}
			v.list = append(v.list, it)
		}
	case c == ')':
		return Value{}, p.errorf("unexpected ')'")
	case isDigit(c):
		return p.verbatim()
	case isAlpha(c) || strings.IndexByte(tokenSpecials, c) >= 0:
		start := p.i
		for p.i < len(p.b) && isTokenByte(p.b[p.i]) {
			p.i++
		}
		return Value{atom: bytes.Clone(p.b[start:p.i])}, nil
	case c == '"':
		return p.quoted()
	case c == '#':
		return p.delimited('#', "hexadecimal", func(s []byte) ([]byte, error) {
			if len(s)%2 != 0 {
				return nil, errors.New("odd number of hexadecimal digits")
			}
			out := make([]byte, len(s)/2)
			for i := range out {
				v, err := strconv.ParseUint(string(s[2*i:2*i+2]), 16, 8)
				if err != nil {
					return nil, fmt.Errorf("bad hexadecimal digit in %q", s[2*i:2*i+2])
				}
				out[i] = byte(v)
			}
			return out, nil
		})
	case c == '|':
		return p.delimited('|', "base64", func(s []byte) ([]byte, error) {
			return base64.StdEncoding.DecodeString(string(s))
		})
	case c == '[':
		return Value{}, p.errorf("display hints are not supported")
	case c == '{':
		return Value{}, p.errorf("the {…} transport encoding is not supported")
	}
	return Value{}, p.errorf("unexpected character %q", c)
}

// verbatim parses `N:bytes`.
func (p *parser) verbatim() (Value, error) {
	start := p.i
	n := 0
	for p.i < len(p.b) && isDigit(p.b[p.i]) {
		if n > len(p.b) {
			return Value{}, p.errorf("length too large")
		}
		n = n*10 + int(p.b[p.i]-'0')
		p.i++
	}
	if p.b[start] == '0' && p.i-start > 1 {
		return Value{}, &SyntaxError{Offset: start, Reason: "length with leading zero"}
	}
	if p.i >= len(p.b) || p.b[p.i] != ':' {
		return Value{}, p.errorf("expected ':' after a length (only verbatim N:bytes may be length-prefixed)")
	}
	p.i++
	if n > len(p.b)-p.i {
		return Value{}, &SyntaxError{Offset: start, Reason: fmt.Sprintf("atom of %d bytes runs past the end", n)}
	}
	v := Value{atom: bytes.Clone(p.b[p.i : p.i+n])}
	p.i += n
	return v, nil
}

// delimited parses #…# or |…|, ignoring whitespace inside.
func (p *parser) delimited(end byte, what string, decode func([]byte) ([]byte, error)) (Value, error) {
	start := p.i
	p.i++
	var s []byte
	for ; p.i < len(p.b) && p.b[p.i] != end; p.i++ {
		if !isSpace(p.b[p.i]) {
			s = append(s, p.b[p.i])
		}
	}
	if p.i >= len(p.b) {
		return Value{}, &SyntaxError{Offset: start, Reason: "unterminated " + what + " atom"}
	}
	p.i++
	out, err := decode(s)
	if err != nil {
		return Value{}, &SyntaxError{Offset: start, Reason: fmt.Sprintf("%s atom: %v", what, err)}
	}
	if out == nil {
		out = []byte{}
	}
	return Value{atom: out}, nil
}

// quoted parses a "string" with libgcrypt's escapes.
func (p *parser) quoted() (Value, error) {
	start := p.i
	p.i++
	out := []byte{}
	for p.i < len(p.b) {
		c := p.b[p.i]
		p.i++
		switch c {
		case '"':
			return Value{atom: out}, nil
		case '\\':
			if p.i >= len(p.b) {
				return Value{}, &SyntaxError{Offset: start, Reason: "unterminated string"}
			}
			e := p.b[p.i]
			p.i++
			switch e {
			case 'b':
				out = append(out, '\b')
			case 't':
				out = append(out, '\t')
			case 'v':
				out = append(out, '\v')
			case 'n':
				out = append(out, '\n')
			case 'f':
				out = append(out, '\f')
			case 'r':
				out = append(out, '\r')
			case '"', '\'', '\\':
				out = append(out, e)
			case '\n', '\r': // line continuation, \n\r or \r\n counting as one
				if p.i < len(p.b) && (p.b[p.i] == '\n' || p.b[p.i] == '\r') && p.b[p.i] != e {
					p.i++
				}
			case 'x':
				if p.i+2 > len(p.b) {
					return Value{}, p.errorf("short \\x escape")
				}
				v, err := strconv.ParseUint(string(p.b[p.i:p.i+2]), 16, 8)
				if err != nil {
					return Value{}, p.errorf("bad \\x escape")
				}
				out = append(out, byte(v))
				p.i += 2
			default:
				if e >= '0' && e <= '7' {
					if p.i+2 > len(p.b) {
						return Value{}, p.errorf("short octal escape")
					}
					v, err := strconv.ParseUint(string(p.b[p.i-1:p.i+2]), 8, 8)
					if err != nil {
						return Value{}, p.errorf("bad octal escape")
					}
					out = append(out, byte(v))
					p.i += 2
					continue
				}
				return Value{}, p.errorf("unknown escape \\%c", e)
			}
		default:
			out = append(out, c)
		}
	}
	return Value{}, &SyntaxError{Offset: start, Reason: "unterminated string"}
}
