package source

import (
	"context"
	"errors"

	"erismount/narinfo"
)

// Chain is a Lookup over several, tried in order as Guix and Nix try
// their substitute URLs: the first trusted narinfo wins. If none has one,
// the error is a transport failure if any failed that way (the item may
// exist: nothing to remember), else ErrUntrusted if any narinfo was found
// but not trusted, else ErrUnknown.
type Chain []Lookup

// Narinfo asks each Lookup in turn.
func (c Chain) Narinfo(ctx context.Context, hashPart string) (*narinfo.Narinfo, error) {
	var untrusted, failed error
	for _, l := range c {
		n, err := l.Narinfo(ctx, hashPart)
		switch {
		case err == nil:
			return n, nil
		case ctx.Err() != nil:
			return nil, err
		case errors.Is(err, ErrUnknown):
		case errors.Is(err, ErrUntrusted):
			if untrusted == nil {
				untrusted = err
			}
		default:
			if failed == nil {
				failed = err
			}
		}
	}
	switch {
	case failed != nil:
		return nil, failed
	case untrusted != nil:
		return nil, untrusted
	}
	return nil, unknown(hashPart, "any source")
}
