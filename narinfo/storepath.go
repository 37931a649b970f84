package narinfo

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrStorePath is matched by every error about a malformed store path or
// store item name.
var ErrStorePath = errors.New("bad store path")

// hashPartLen is the length of the nix-base32 hash part of a store item
// name (160 bits).
const hashPartLen = 32

// maxNameLen bounds the name after the hash part, as Nix does.
const maxNameLen = 211

const nix32Chars = "0123456789abcdfghijklmnpqrsvwxyz"

// CheckBaseName reports why s is not a store item base name
// `<32 nix-base32 chars>-<name>`, or nil. The name may hold letters,
// digits and `+-._?=` and must not start with a dot.
func CheckBaseName(s string) error {
	if len(s) < hashPartLen+2 || s[hashPartLen] != '-' {
		return fmt.Errorf("narinfo: %w: %q is not <32-character hash>-<name>", ErrStorePath, s)
	}
	for i := range hashPartLen {
		if strings.IndexByte(nix32Chars, s[i]) < 0 {
			return fmt.Errorf("narinfo: %w: %q: hash part has %q, not a nix-base32 character", ErrStorePath, s, s[i])
		}
	}
	name := s[hashPartLen+1:]
	if len(name) > maxNameLen {
		return fmt.Errorf("narinfo: %w: %q: name longer than %d bytes", ErrStorePath, s, maxNameLen)
	}
	if name[0] == '.' {
		return fmt.Errorf("narinfo: %w: %q: name starts with a dot", ErrStorePath, s)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("+-._?=", c) >= 0) {
			return fmt.Errorf("narinfo: %w: %q: name has %q", ErrStorePath, s, c)
		}
	}
	return nil
}

// SplitStorePath splits an absolute store path into its store directory
// and base name, checking both.
func SplitStorePath(p string) (dir, base string, err error) {
	dir, base = path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if !path.IsAbs(p) || dir == "" || path.Clean(dir) != dir {
		return "", "", fmt.Errorf("narinfo: %w: %q is not an absolute path in a store directory", ErrStorePath, p)
	}
	if err := CheckBaseName(base); err != nil {
		return "", "", err
	}
	return dir, base, nil
}
