package fetcher

import (
	"errors"
	"fmt"
	"strings"
)

// Link is one link of an RFC 6690 link-format document (CoRE Link Format,
// what /.well-known/core answers): a target URI reference and its
// attributes, in order.
type Link struct {
	Target string
	Attrs  []LinkAttr
}

// LinkAttr is one link parameter; Value is empty for a parameter without
// one, and unquoted for a quoted string.
type LinkAttr struct {
	Name, Value string
}

// HasAttrValue reports whether the link has the attribute name with value
// among its space-separated values (RFC 6690 §3.1: rt and if are lists).
func (l Link) HasAttrValue(name, value string) bool {
	for _, a := range l.Attrs {
		if !strings.EqualFold(a.Name, name) {
			continue
		}
		for v := range strings.FieldsSeq(a.Value) {
			if v == value {
				return true
			}
		}
	}
	return false
}

// ErrLinkFormat is wrapped by the errors of ParseLinkFormat.
var ErrLinkFormat = errors.New("malformed link format")

// maxLinks bounds the links one document may hold (a discovery answer
// names a store or two).
const maxLinks = 256

// ParseLinkFormat parses an RFC 6690 link-format document:
//
//	Links       = link-value *( "," link-value )
//	link-value  = "<" URI-Reference ">" *( ";" link-param )
//	link-param  = parmname [ "=" ( ptoken / quoted-string ) ]
//
// Whitespace around separators is tolerated. Quoted strings may hold
// commas, semicolons and backslash escapes.
func ParseLinkFormat(doc string) ([]Link, error) {
	p := linkParser{s: doc}
	var links []Link
	p.space()
	if p.done() {
		return nil, nil
	}
	for {
		l, err := p.link()
		if err != nil {
			return nil, fmt.Errorf("%w: %v at byte %d", ErrLinkFormat, err, p.i)
		}
		if len(links) == maxLinks {
			return nil, fmt.Errorf("%w: more than %d links", ErrLinkFormat, maxLinks)
		}
		links = append(links, l)
		p.space()
		if p.done() {
			return links, nil
		}
		if !p.eat(',') {
			return nil, fmt.Errorf("%w: want ',' between links at byte %d", ErrLinkFormat, p.i)
		}
		p.space()
	}
}

type linkParser struct {
	s string
	i int
}

func (p *linkParser) done() bool { return p.i >= len(p.s) }

func (p *linkParser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *linkParser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\r' || p.s[p.i] == '\n') {
		p.i++
	}
}

func (p *linkParser) link() (Link, error) {
	if !p.eat('<') {
		return Link{}, errors.New("want '<'")
	}
	end := strings.IndexByte(p.s[p.i:], '>')
	if end < 0 {
		return Link{}, errors.New("unterminated '<'")
	}
	l := Link{Target: p.s[p.i : p.i+end]}
	if strings.ContainsAny(l.Target, "<\" \t\r\n") {
		return Link{}, errors.New("bad character in a URI reference")
	}
	p.i += end + 1
	for {
		p.space()
		if !p.eat(';') {
			return l, nil
		}
		p.space()
		a, err := p.param()
		if err != nil {
			return Link{}, err
		}
		l.Attrs = append(l.Attrs, a)
	}
}

// isParmChar is RFC 5987's attr-char, of which parmname and ptoken are
// made (ptoken allows a few more).
func isParmChar(c byte, token bool) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case strings.IndexByte("!#$&+-.^_`|~", c) >= 0:
		return true
	case token && strings.IndexByte("%'()*/:<=>?@[]{}", c) >= 0:
		return true
	}
	return false
}

func (p *linkParser) param() (LinkAttr, error) {
	start := p.i
	for p.i < len(p.s) && isParmChar(p.s[p.i], false) {
		p.i++
	}
	if p.i == start {
		return LinkAttr{}, errors.New("empty parameter name")
	}
	a := LinkAttr{Name: p.s[start:p.i]}
	p.space()
	if !p.eat('=') {
		return a, nil
	}
	p.space()
	if p.eat('"') {
		var b strings.Builder
		for {
			if p.done() {
				return LinkAttr{}, errors.New("unterminated quoted string")
			}
			c := p.s[p.i]
			p.i++
			switch c {
			case '"':
				a.Value = b.String()
				return a, nil
			case '\\':
				if p.done() {
					return LinkAttr{}, errors.New("unterminated escape")
				}
				b.WriteByte(p.s[p.i])
				p.i++
			default:
				b.WriteByte(c)
			}
		}
	}
	start = p.i
	for p.i < len(p.s) && isParmChar(p.s[p.i], true) && p.s[p.i] != ',' && p.s[p.i] != ';' {
		p.i++
	}
	if p.i == start {
		return LinkAttr{}, fmt.Errorf("empty value of %s", a.Name)
	}
	a.Value = p.s[start:p.i]
	return a, nil
}
