package nar

import (
	"errors"
	"fmt"
	"strings"
)

// Tokens of the nar grammar (spec §2.1).
const (
	magic = "nix-archive-1"
	// maxToken is the longest string the grammar uses where a token is
	// expected ("nix-archive-1"); longer strings there are rejected before
	// they are read.
	maxToken = 16
)

// Limits a [Reader] and a [Writer] enforce. Nix has none for depth; ours
// bound memory and reject archives no file system could hold.
const (
	// MaxNameLen is the longest directory entry name (Linux NAME_MAX).
	MaxNameLen = 255
	// MaxTargetLen is the longest symlink target (Linux PATH_MAX - 1).
	MaxTargetLen = 4095
	// MaxDepth is the deepest directory nesting accepted.
	MaxDepth = 256
	// MaxFileSize is the largest file accepted (4 EiB: no file system
	// holds more, and sizes stay far from int64 overflow).
	MaxFileSize = 1 << 62
)

// Type is the kind of a node.
type Type uint8

// The four kinds of node a nar can hold (spec §2.1).
const (
	Regular Type = iota + 1
	Executable
	Symlink
	Directory
)

func (t Type) String() string {
	switch t {
	case Regular:
		return "regular"
	case Executable:
		return "executable"
	case Symlink:
		return "symlink"
	case Directory:
		return "directory"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Header describes one node of a nar.
type Header struct {
	// Path is slash-separated and relative to the root of the archive; it
	// is "" for the root node itself.
	Path string
	Type Type
	// Size is the length of a regular or executable file's contents.
	Size int64
	// LinkTarget is a symlink's target, never interpreted.
	LinkTarget string
}

// ErrFormat is matched (errors.Is) by every error about a malformed or
// non-canonical nar, from the Reader as well as the Writer.
var ErrFormat = errors.New("malformed nar")

// FormatError reports what was wrong with a nar and where.
type FormatError struct {
	// Offset is the byte offset in the archive of the item that is wrong
	// (for a Writer: the number of bytes written so far).
	Offset int64
	Reason string
	// Err is an underlying cause, such as io.ErrUnexpectedEOF, or nil.
	Err error
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("nar: malformed archive at byte %d: %s", e.Offset, e.Reason)
}

// Is makes every FormatError match ErrFormat.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

// Unwrap returns the underlying cause, if any.
func (e *FormatError) Unwrap() error { return e.Err }

// ValidName reports why name cannot be a directory entry of a nar, or nil:
// it must be non-empty, at most MaxNameLen bytes, not "." or "..", and
// contain neither '/' nor NUL (spec §2.1).
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty entry name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("entry name of %d bytes exceeds %d", len(name), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("entry name %q", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("entry name %q contains '/' or NUL", name)
	}
	return nil
}

// validTarget reports why target cannot be a symlink target, or nil.
func validTarget(target string) error {
	switch {
	case target == "":
		return errors.New("empty symlink target")
	case len(target) > MaxTargetLen:
		return fmt.Errorf("symlink target of %d bytes exceeds %d", len(target), MaxTargetLen)
	case strings.IndexByte(target, 0) >= 0:
		return fmt.Errorf("symlink target %q contains NUL", target)
	}
	return nil
}

// padLen is the number of zero bytes that follow n bytes of a string.
func padLen(n int64) int { return int(-n & 7) }

// join returns the path of entry name inside directory dir.
func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// quote shortens s for an error message.
func quote(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q…", s[:40])
	}
	return fmt.Sprintf("%q", s)
}
