package source

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"erismount/narinfo"
)

var (
	// ErrUnknown means no source has a narinfo for the store item.
	ErrUnknown = errors.New("no narinfo for this store item")
	// ErrUntrusted is matched by an *UntrustedError: a narinfo was found
	// but is not served.
	ErrUntrusted = errors.New("narinfo not trusted")
	// ErrNoTrust means a Trust accepts nothing.
	ErrNoTrust = errors.New("no trusted narinfo keys (set Trust.ACL, Trust.NixKeys or Trust.Any)")
)

// Lookup gives the verified narinfo of a store item by the hash part of
// its store path (the 32 nix-base32 characters before the first dash).
type Lookup interface {
	// Narinfo returns the narinfo of hashPart, its signature trusted and
	// its Locations absolute URLs, or an error matching ErrUnknown or
	// ErrUntrusted, or another error (a transport failure). The caller
	// must not modify the narinfo: implementations may share it.
	Narinfo(ctx context.Context, hashPart string) (*narinfo.Narinfo, error)
}

// UntrustedError says why a narinfo found is not served.
type UntrustedError struct {
	HashPart string
	Origin   string // where it came from: a URL or a file
	Reason   error
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("narinfo %s from %s not trusted: %v", e.HashPart, e.Origin, e.Reason)
}

// Is makes an UntrustedError match ErrUntrusted.
func (e *UntrustedError) Is(target error) bool { return target == ErrUntrusted }

// Unwrap returns the reason (a *narinfo.VerifyError, a narinfo.ErrSyntax
// error, …).
func (e *UntrustedError) Unwrap() error { return e.Reason }

// unknown returns an error matching ErrUnknown.
func unknown(hashPart, origin string) error {
	return fmt.Errorf("%w: %s at %s", ErrUnknown, hashPart, origin)
}

// Trust says which narinfos are served: those with a valid Guix signature
// by a key of ACL, or a valid Nix Sig by one of NixKeys — or, with Any,
// all of them (the source is trusted as it is).
type Trust struct {
	ACL     *narinfo.ACL
	NixKeys []narinfo.NixPublicKey
	Any     bool
}

// IsZero reports whether t trusts nothing.
func (t Trust) IsZero() bool { return t.ACL == nil && len(t.NixKeys) == 0 && !t.Any }

// Check returns nil if n is signed by a trusted key, else why not.
func (t Trust) Check(n *narinfo.Narinfo) error {
	if t.Any {
		return nil
	}
	if t.IsZero() {
		return ErrNoTrust
	}
	var errs []error
	if t.ACL != nil {
		_, err := n.Verify(t.ACL)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(t.NixKeys) > 0 {
		_, err := n.VerifyNix(t.NixKeys)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Accept parses raw, the narinfo origin gave for hashPart, and checks it:
// well formed, for a store path of hashPart in storeDir, signed by a key
// t trusts. Anything else is an *UntrustedError. Locations are left as
// written.
func Accept(raw []byte, hashPart, storeDir, origin string, t Trust) (*narinfo.Narinfo, error) {
	bad := func(err error) error { return &UntrustedError{HashPart: hashPart, Origin: origin, Reason: err} }
	n, err := narinfo.Parse(raw)
	if err != nil {
		return nil, bad(err)
	}
	if dir := n.StoreDir(); dir != storeDir {
		return nil, bad(fmt.Errorf("%s is in %s, not %s", n.StorePath, dir, storeDir))
	}
	if !strings.HasPrefix(n.BaseName(), hashPart+"-") {
		return nil, bad(fmt.Errorf("the narinfo of %s is for %s", hashPart, n.StorePath))
	}
	if err := t.Check(n); err != nil {
		return nil, bad(fmt.Errorf("%s: %w", n.StorePath, err))
	}
	return n, nil
}

// resolve makes n's Locations absolute URLs against base (a directory URL,
// ending in "/"), as `guix substitute` and Nix join a cache URL and a
// narinfo's URL. A location may be http or https, or file only if base is
// a file URL: an upstream server cannot point at local files.
func resolve(n *narinfo.Narinfo, base *url.URL) error {
	for i, l := range n.Locations {
		u, err := url.Parse(l.URL)
		if err != nil {
			return fmt.Errorf("URL %q: %w", l.URL, err)
		}
		abs := base.ResolveReference(u)
		switch {
		case abs.Scheme == "http" || abs.Scheme == "https":
		case abs.Scheme == "file" && base.Scheme == "file":
		default:
			return fmt.Errorf("URL %q: scheme %q not allowed from %s", l.URL, abs.Scheme, base.Redacted())
		}
		n.Locations[i].URL = abs.String()
	}
	return nil
}

// dirURL returns u with a path ending in "/", so that relative URLs
// resolve below it.
func dirURL(u *url.URL) *url.URL {
	d := *u
	if !strings.HasSuffix(d.Path, "/") {
		d.Path += "/"
		if d.RawPath != "" {
			d.RawPath += "/"
		}
	}
	return &d
}

// ValidHashPart reports whether s is the hash part of a store path: 32
// characters of Nix's base-32 alphabet (spec §2.2).
func ValidHashPart(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' && c != 'e' && c != 'o' && c != 'u' && c != 't') {
			return false
		}
	}
	return true
}

// checkHashPart returns an ErrUnknown error for what is not a hash part:
// no store item has that name.
func checkHashPart(hashPart, origin string) error {
	if !ValidHashPart(hashPart) {
		return fmt.Errorf("%w: %q is not a store path hash (at %s)", ErrUnknown, hashPart, origin)
	}
	return nil
}

// ExitCode makes a command exit with 4 (verification failed).
func (e *UntrustedError) ExitCode() int { return 4 }
