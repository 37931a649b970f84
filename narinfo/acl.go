package narinfo

import (
	"errors"
	"fmt"

	"erismount/narinfo/sexp"
)

// ErrACL is matched by errors about a malformed ACL file.
var ErrACL = errors.New("invalid access-control list")

// ACL is Guix's /etc/guix/acl: the public keys authorized to sign
// substitutes (spec §1.6). The zero value authorizes nothing.
type ACL struct {
	keys []sexp.Value
}

// ParseACL parses an ACL file: (acl (entry <public-key> (tag (guix
// import))) …). As in Guix, any entry of another shape makes the whole ACL
// invalid. Entries are kept as s-expressions and compared structurally, so
// layout and atom encoding do not matter.
func ParseACL(text []byte) (*ACL, error) {
	v, err := sexp.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("narinfo: %w: %w", ErrACL, err)
	}
	if !v.IsList() || v.Head() != "acl" {
		return nil, fmt.Errorf("narinfo: %w: expected (acl …)", ErrACL)
	}
	tag := sexp.List(sexp.Token("tag"), sexp.List(sexp.Token("guix"), sexp.Token("import")))
	a := &ACL{}
	for i, e := range v.Items()[1:] {
		if e.Len() != 3 || e.Head() != "entry" || !sexp.Equal(e.Nth(2), tag) {
			return nil, fmt.Errorf("narinfo: %w: entry %d is not (entry <key> (tag (guix import)))", ErrACL, i+1)
		}
		a.keys = append(a.keys, e.Nth(1))
	}
	return a, nil
}

// NewACL returns an ACL authorizing keys.
func NewACL(keys ...PublicKey) *ACL {
	a := &ACL{}
	for _, k := range keys {
		a.Authorize(k)
	}
	return a
}

// Authorize adds k unless it is already there, first in the list as
// `guix archive --authorize` does.
func (a *ACL) Authorize(k PublicKey) {
	if a.authorizes(k.Sexp()) {
		return
	}
	a.keys = append([]sexp.Value{k.Sexp()}, a.keys...)
}

// Authorizes reports whether the ACL lists k.
func (a *ACL) Authorizes(k PublicKey) bool { return a.authorizes(k.Sexp()) }

func (a *ACL) authorizes(key sexp.Value) bool {
	if a == nil {
		return false
	}
	for _, k := range a.keys {
		if sexp.Equal(k, key) {
			return true
		}
	}
	return false
}

// MarshalText returns the ACL as Guix writes it.
func (a *ACL) MarshalText() ([]byte, error) {
	items := []sexp.Value{sexp.Token("acl")}
	for _, k := range a.keys {
		items = append(items, sexp.List(sexp.Token("entry"), k,
			sexp.List(sexp.Token("tag"), sexp.List(sexp.Token("guix"), sexp.Token("import")))))
	}
	return sexp.List(items...).Advanced(), nil
}
