package nar

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Reader reads a nar stream node by node, like archive/tar: Next returns
// the header of the next node in archive order (a directory before its
// entries, entries in strictly increasing byte order), and Read returns the
// contents of the current regular or executable file.
//
// The Reader accepts exactly the canonical nars that Nix and Guix write:
// anything else — unknown or misplaced tokens, names that are empty, ".",
// "..", or contain '/' or NUL, entries out of order or repeated, strings
// longer than the limits of this package, non-zero padding, a size that
// does not fit in an int64, data after the end of the archive — is a
// *FormatError naming the byte offset (matching ErrFormat), and the Reader
// stays failed. Re-writing what a Reader accepted with a Writer gives the
// same bytes.
type Reader struct {
	r   *bufio.Reader
	off int64 // bytes consumed from r
	err error // sticky: a failure or io.EOF

	started bool
	stack   []openDir // directories whose entries are being read
	leaf    bool      // the current node is a file or symlink still to be closed
	remain  int64     // unread contents of the current file
	pad     int       // padding after those contents

	tok [maxToken]byte
}

type openDir struct {
	path string
	last string // name of the previous entry; "" before the first
}

// NewReader returns a Reader of the nar in r. It buffers r: bytes after the
// archive are read (and rejected), so r must hold one nar and nothing else.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Offset returns the number of archive bytes consumed so far.
func (r *Reader) Offset() int64 { return r.off }

// Next advances to the next node and returns its header. Unread contents of
// the previous file are skipped (and checked). At the end of the archive,
// after checking that nothing follows it, Next returns io.EOF.
func (r *Reader) Next() (*Header, error) {
	if r.err != nil {
		return nil, r.err
	}
	h, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return h, nil
}

// Read reads the contents of the current file. It returns io.EOF at the end
// of the file, and at once for symlinks and directories.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.r.Read(p)
	r.off += int64(n)
	r.remain -= int64(n)
	if err != nil {
		if err == io.EOF {
			err = r.truncated()
		} else {
			err = r.ioError(err)
		}
		r.err = err
		return n, err
	}
	return n, nil
}

func (r *Reader) next() (*Header, error) {
	if !r.started {
		r.started = true
		if err := r.expect(magic); err != nil {
			return nil, err
		}
		return r.node("")
	}
	if r.leaf {
		if err := r.closeLeaf(); err != nil {
			return nil, err
		}
	}
	for len(r.stack) > 0 {
		top := &r.stack[len(r.stack)-1]
		start := r.off
		tok, err := r.token()
		if err != nil {
			return nil, err
		}
		switch tok {
		case ")": // end of the directory node
			r.stack = r.stack[:len(r.stack)-1]
			if len(r.stack) > 0 { // end of the entry holding it
				if err := r.expect(")"); err != nil {
					return nil, err
				}
			}
		case "entry":
			if err := r.expect("("); err != nil {
				return nil, err
			}
			if err := r.expect("name"); err != nil {
				return nil, err
			}
			start := r.off
			name, err := r.str(MaxNameLen, "entry name")
			if err != nil {
				return nil, err
			}
			if err := ValidName(name); err != nil {
				return nil, r.errorAt(start, "%v", err)
			}
			if top.last != "" && name <= top.last {
				if name == top.last {
					return nil, r.errorAt(start, "duplicate entry %s in %s", quote(name), quote(top.path))
				}
				return nil, r.errorAt(start, "entry %s after %s in %s: not in byte order", quote(name), quote(top.last), quote(top.path))
			}
			top.last = name
			if err := r.expect("node"); err != nil {
				return nil, err
			}
			return r.node(join(top.path, name))
		default:
			return nil, r.errorAt(start, "expected \"entry\" or \")\" in directory %s, got %s", quote(top.path), quote(tok))
		}
	}
	// The root node is closed: the archive must end here.
	if _, err := r.r.ReadByte(); err == nil {
		return nil, r.errorAt(r.off, "trailing data after the end of the archive")
	} else if err != io.EOF {
		return nil, r.ioError(err)
	}
	return nil, io.EOF
}

// node reads a node's header up to its contents (files), its closing
// parenthesis (symlinks) or its first entry (directories).
func (r *Reader) node(path string) (*Header, error) {
	if err := r.expect("("); err != nil {
		return nil, err
	}
	if err := r.expect("type"); err != nil {
		return nil, err
	}
	start := r.off
	tok, err := r.token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case "regular":
		typ := Regular
		start := r.off
		tok, err := r.token()
		if err != nil {
			return nil, err
		}
		if tok == "executable" {
			typ = Executable
			if err := r.expect(""); err != nil {
				return nil, err
			}
			start = r.off
			if tok, err = r.token(); err != nil {
				return nil, err
			}
		}
		if tok != "contents" {
			return nil, r.errorAt(start, "expected \"contents\" in file %s, got %s", quote(path), quote(tok))
		}
		start = r.off
		size, err := r.uint64()
		if err != nil {
			return nil, err
		}
		if size > MaxFileSize {
			return nil, r.errorAt(start, "file %s has absurd size %d", quote(path), size)
		}
		r.leaf, r.remain, r.pad = true, int64(size), padLen(int64(size))
		return &Header{Path: path, Type: typ, Size: int64(size)}, nil
	case "symlink":
		if err := r.expect("target"); err != nil {
			return nil, err
		}
		start := r.off
		target, err := r.str(MaxTargetLen, "symlink target")
		if err != nil {
			return nil, err
		}
		if err := validTarget(target); err != nil {
			return nil, r.errorAt(start, "symlink %s: %v", quote(path), err)
		}
		r.leaf = true
		return &Header{Path: path, Type: Symlink, LinkTarget: target}, nil
	case "directory":
		if len(r.stack) >= MaxDepth {
			return nil, r.errorAt(start, "directory %s nested deeper than %d", quote(path), MaxDepth)
		}
		r.stack = append(r.stack, openDir{path: path})
		return &Header{Path: path, Type: Directory}, nil
	}
	return nil, r.errorAt(start, "unknown node type %s at %s", quote(tok), quote(path))
}

// closeLeaf skips what is left of a file, checks its padding and reads the
// closing parentheses of the node and of the entry holding it.
func (r *Reader) closeLeaf() error {
	if r.remain > 0 {
		n, err := io.CopyN(io.Discard, r.r, r.remain)
		r.off += n
		r.remain -= n
		if err == io.EOF {
			return r.truncated()
		} else if err != nil {
			return r.ioError(err)
		}
	}
	if err := r.padding(r.pad); err != nil {
		return err
	}
	r.leaf, r.pad = false, 0
	if err := r.expect(")"); err != nil {
		return err
	}
	if len(r.stack) > 0 {
		return r.expect(")")
	}
	return nil
}

func (r *Reader) uint64() (uint64, error) {
	var b [8]byte
	if err := r.full(b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// full reads len(b) bytes.
func (r *Reader) full(b []byte) error {
	n, err := io.ReadFull(r.r, b)
	r.off += int64(n)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return r.truncated()
	case err != nil:
		return r.ioError(err)
	}
	return nil
}

// length reads a string's length and checks it against limit.
func (r *Reader) length(limit int, what string) (int, error) {
	start := r.off
	n, err := r.uint64()
	if err != nil {
		return 0, err
	}
	if n > uint64(limit) {
		return 0, r.errorAt(start, "%s of %d bytes exceeds %d", what, n, limit)
	}
	return int(n), nil
}

func (r *Reader) padding(n int) error {
	if n == 0 {
		return nil
	}
	start := r.off
	var b [8]byte
	if err := r.full(b[:n]); err != nil {
		return err
	}
	for _, c := range b[:n] {
		if c != 0 {
			return r.errorAt(start, "non-zero padding")
		}
	}
	return nil
}

// str reads a string of at most limit bytes.
func (r *Reader) str(limit int, what string) (string, error) {
	n, err := r.length(limit, what)
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if err := r.full(b); err != nil {
		return "", err
	}
	if err := r.padding(padLen(int64(n))); err != nil {
		return "", err
	}
	return string(b), nil
}

// token reads a short string where the grammar expects a keyword.
func (r *Reader) token() (string, error) {
	n, err := r.length(maxToken, "string where a token is expected")
	if err != nil {
		return "", err
	}
	b := r.tok[:n]
	if err := r.full(b); err != nil {
		return "", err
	}
	if err := r.padding(padLen(int64(n))); err != nil {
		return "", err
	}
	return string(b), nil
}

func (r *Reader) expect(want string) error {
	start := r.off
	got, err := r.token()
	if err != nil {
		return err
	}
	if got != want {
		return r.errorAt(start, "expected %q, got %s", want, quote(got))
	}
	return nil
}

func (r *Reader) errorAt(off int64, format string, args ...any) error {
	return &FormatError{Offset: off, Reason: fmt.Sprintf(format, args...)}
}

func (r *Reader) truncated() error {
	return &FormatError{Offset: r.off, Reason: "archive ends early", Err: io.ErrUnexpectedEOF}
}

func (r *Reader) ioError(err error) error {
	if errors.Is(err, ErrFormat) {
		return err
	}
	return fmt.Errorf("nar: read at byte %d: %w", r.off, err)
}
