package erisfs

import (
	"strings"
	"unicode/utf8"
)

// Limits bound what the encoder produces and what the decoder accepts. A
// zero field takes its default; the defaults are far above any real Guix or
// Nix store item (the largest hold a few hundred thousand files) while
// keeping a hostile index from exhausting memory.
type Limits struct {
	// MaxEntries bounds the entries of a tree, implied directories
	// included. Default 1<<22 (4 194 304).
	MaxEntries int
	// MaxDepth bounds the components of a path. Default 1024 (a path that
	// deep is already past Linux's PATH_MAX of 4096 bytes).
	MaxDepth int
	// MaxNameLen bounds one path component, in bytes. Default 255, Linux's
	// NAME_MAX: no file system there can hold a longer name, so such a
	// tree could be neither mounted nor written out.
	MaxNameLen int
	// MaxTargetLen bounds a symlink target, in bytes. Default 4095, Linux's
	// PATH_MAX less the terminating NUL, the longest target symlink(2)
	// accepts.
	MaxTargetLen int
	// MaxIndexSize bounds the encoded index, in bytes. Default 1 GiB (a
	// real index costs about 150 bytes per file).
	MaxIndexSize int64
}

// Default limits (see Limits).
const (
	DefaultMaxEntries   = 1 << 22
	DefaultMaxDepth     = 1024
	DefaultMaxNameLen   = 255
	DefaultMaxTargetLen = 4095
	DefaultMaxIndexSize = 1 << 30
)

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxNameLen <= 0 {
		l.MaxNameLen = DefaultMaxNameLen
	}
	if l.MaxTargetLen <= 0 {
		l.MaxTargetLen = DefaultMaxTargetLen
	}
	if l.MaxIndexSize <= 0 {
		l.MaxIndexSize = DefaultMaxIndexSize
	}
	return l
}

// checkName reports why a path component is not acceptable, or "" when it
// is: the rules of the ERIS-FS notes ("What a decoder must reject") plus
// UTF-8, which a CBOR text string must be (RFC 8949 §3.1, major type 3).
func checkName(name string) string {
	switch {
	case name == "":
		return "empty path component"
	case name == "." || name == "..":
		return "path component " + name + " not allowed"
	case strings.IndexByte(name, '/') >= 0:
		return "path component contains '/'"
	case strings.IndexByte(name, 0) >= 0:
		return "path component contains NUL"
	case !utf8.ValidString(name):
		return "path component is not valid UTF-8"
	}
	return ""
}

// checkTarget reports why a symlink target is not acceptable, or "". An
// empty target cannot be created on Linux (symlink(2) returns ENOENT), and
// a NUL would cut it short.
func checkTarget(target string) string {
	switch {
	case target == "":
		return "empty symlink target"
	case strings.IndexByte(target, 0) >= 0:
		return "symlink target contains NUL"
	case !utf8.ValidString(target):
		return "symlink target is not valid UTF-8"
	}
	return ""
}
