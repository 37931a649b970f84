package erisfs

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrInvalidIndex is matched by every error about an index that is not
	// a valid ERIS-FS index: not matching the CDDL, hostile paths or
	// targets, duplicates, a non-deterministic encoding. It is the
	// content's fault, not the store's: fetching it again will not help.
	ErrInvalidIndex = errors.New("invalid ERIS-FS index")
	// ErrLimit is matched by errors about a tree or index that exceeds a
	// configured Limits value (entries, depth, name or target length,
	// index size), when encoding or decoding.
	ErrLimit = errors.New("limit exceeded")
	// ErrUnrepresentable is matched by errors about something ERIS-FS cannot
	// hold: an empty directory below the root, a device, socket or FIFO,
	// a name or symlink target that is not UTF-8.
	ErrUnrepresentable = errors.New("not representable in ERIS-FS")
)

// PathError is an error about one path of a tree or index. Path is the
// slash-separated path from the root ("" is the root itself); Err matches
// ErrInvalidIndex, ErrLimit or ErrUnrepresentable.
type PathError struct {
	Path   string
	Reason string
	Err    error

	comps []string // an index path whose components are invalid: shown as a list
}

func (e *PathError) Error() string {
	where := displayPath(e.Path)
	if e.comps != nil {
		where = fmt.Sprintf("path %q", e.comps)
	}
	return fmt.Sprintf("erisfs: %v: %s: %s", e.Err, where, e.Reason)
}

func (e *PathError) Unwrap() error { return e.Err }

// displayPath quotes a path for messages; the root gets a name of its own.
func displayPath(p string) string {
	if p == "" {
		return "root (empty path)"
	}
	return fmt.Sprintf("path %q", p)
}

func invalid(path, format string, args ...any) error {
	return &PathError{Path: path, Reason: fmt.Sprintf(format, args...), Err: ErrInvalidIndex}
}

func overLimit(path, format string, args ...any) error {
	return &PathError{Path: path, Reason: fmt.Sprintf(format, args...), Err: ErrLimit}
}

func unrepresentable(path, format string, args ...any) error {
	return &PathError{Path: path, Reason: fmt.Sprintf(format, args...), Err: ErrUnrepresentable}
}

// joinPath is the slash-separated form of path components, for messages
// and lookups. It is only unambiguous for validated components.
func joinPath(comps []string) string { return strings.Join(comps, "/") }
