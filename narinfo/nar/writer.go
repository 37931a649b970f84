package nar

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrWriteAfterClose is returned by a Writer used after Close.
var ErrWriteAfterClose = errors.New("nar: write after close")

// Writer writes a nar, node by node, in the order a Reader returns them:
// WriteHeader for each node (the root first, with Path ""; a directory
// before its entries; entries of a directory in strictly increasing byte
// order), Write for a file's contents, Close at the end. A header that would
// make the archive non-canonical is refused with an error matching
// ErrFormat and leaves the Writer unchanged; a failure of the underlying
// writer is final.
type Writer struct {
	bw  *bufio.Writer
	n   int64 // bytes accepted by bw
	err error // sticky failure of the underlying writer

	started, closed bool
	stack           []openDir
	leaf            bool
	path            string // of the current leaf
	remain          int64  // contents still to be written
	pad             int
}

// NewWriter returns a Writer writing a nar to w. Output is buffered; Close
// flushes it.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, 32<<10)}
}

// WriteHeader starts the node h. It first finishes the previous node: the
// whole contents of a previous file must have been written.
func (w *Writer) WriteHeader(h *Header) error {
	if err := w.usable(); err != nil {
		return err
	}
	if err := w.checkLeafDone(); err != nil {
		return err
	}
	if err := w.checkNode(h); err != nil {
		return err
	}
	if !w.started {
		if h.Path != "" {
			return w.formatError("the first node must be the root, with path \"\", not %s", quote(h.Path))
		}
		w.started = true
		w.str(magic)
		return w.node(h)
	}
	i, name, err := w.parentOf(h.Path)
	if err != nil {
		return err
	}
	w.closeLeaf()
	for len(w.stack) > i+1 {
		w.closeDir()
	}
	w.stack[i].last = name
	w.str("entry")
	w.str("(")
	w.str("name")
	w.str(name)
	w.str("node")
	return w.node(h)
}

// Write writes contents of the current file; more than its header's Size
// is an error.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if int64(len(p)) > w.remain {
		return 0, w.formatError("write of %d bytes exceeds the %d bytes left in %s", len(p), w.remain, quote(w.path))
	}
	n, err := w.bw.Write(p)
	w.n += int64(n)
	w.remain -= int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

// ReadFrom copies the contents of the current file from r, up to the
// number of bytes still expected.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	n, err := w.bw.ReadFrom(io.LimitReader(r, w.remain))
	w.n += n
	w.remain -= n
	return n, err
}

// Flush writes buffered data to the underlying writer.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = err
	}
	return w.err
}

// Close finishes the open nodes and flushes. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if err := w.usable(); err != nil {
		return err
	}
	if !w.started {
		return w.formatError("no root node written")
	}
	if err := w.checkLeafDone(); err != nil {
		return err
	}
	w.closeLeaf()
	for len(w.stack) > 0 {
		w.closeDir()
	}
	w.closed = true
	return w.Flush()
}

// Size returns the number of archive bytes written so far (buffered or
// not).
func (w *Writer) Size() int64 { return w.n }

func (w *Writer) usable() error {
	if w.closed {
		return ErrWriteAfterClose
	}
	return w.err
}

func (w *Writer) checkLeafDone() error {
	if w.leaf && w.remain > 0 {
		return w.formatError("%s: %d bytes of contents missing", quote(w.path), w.remain)
	}
	return nil
}

// checkNode validates the fields of h that do not depend on position.
func (w *Writer) checkNode(h *Header) error {
	switch h.Type {
	case Regular, Executable:
		if h.Size < 0 || h.Size > MaxFileSize {
			return w.formatError("file %s has size %d", quote(h.Path), h.Size)
		}
	case Symlink:
		if err := validTarget(h.LinkTarget); err != nil {
			return w.formatError("symlink %s: %v", quote(h.Path), err)
		}
	case Directory:
		if strings.Count(h.Path, "/") >= MaxDepth-1 {
			return w.formatError("directory %s nested deeper than %d", quote(h.Path), MaxDepth)
		}
	default:
		return w.formatError("node %s has unknown type %v", quote(h.Path), h.Type)
	}
	return nil
}

// parentOf finds the open directory that path is an entry of, checking
// that its name is valid and comes after the directory's previous entry.
func (w *Writer) parentOf(path string) (int, string, error) {
	if path == "" {
		return 0, "", w.formatError("a second root node")
	}
	dir, name := "", path
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		dir, name = path[:i], path[i+1:]
	}
	if err := ValidName(name); err != nil {
		return 0, "", w.formatError("%s: %v", quote(path), err)
	}
	if join(dir, name) != path {
		return 0, "", w.formatError("malformed path %s", quote(path))
	}
	for i := len(w.stack) - 1; i >= 0; i-- {
		if w.stack[i].path != dir {
			continue
		}
		if last := w.stack[i].last; last != "" && name <= last {
			return 0, "", w.formatError("%s after %s: entries must be unique and in byte order", quote(path), quote(join(dir, last)))
		}
		return i, name, nil
	}
	return 0, "", w.formatError("%s is not an entry of a directory still open (nodes out of order?)", quote(path))
}

func (w *Writer) node(h *Header) error {
	w.str("(")
	w.str("type")
	switch h.Type {
	case Regular, Executable:
		w.str("regular")
		if h.Type == Executable {
			w.str("executable")
			w.str("")
		}
		w.str("contents")
		w.uint64(uint64(h.Size))
		w.leaf, w.path, w.remain, w.pad = true, h.Path, h.Size, padLen(h.Size)
	case Symlink:
		w.str("symlink")
		w.str("target")
		w.str(h.LinkTarget)
		w.leaf, w.path, w.remain, w.pad = true, h.Path, 0, 0
	case Directory:
		w.str("directory")
		w.stack = append(w.stack, openDir{path: h.Path})
	}
	return w.err
}

func (w *Writer) closeLeaf() {
	if !w.leaf {
		return
	}
	w.zeros(w.pad)
	w.str(")")
	if len(w.stack) > 0 {
		w.str(")")
	}
	w.leaf, w.pad = false, 0
}

func (w *Writer) closeDir() {
	w.stack = w.stack[:len(w.stack)-1]
	w.str(")")
	if len(w.stack) > 0 {
		w.str(")")
	}
}

func (w *Writer) uint64(v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	w.raw(b[:])
}

func (w *Writer) str(s string) {
	w.uint64(uint64(len(s)))
	if w.err == nil {
		n, err := w.bw.WriteString(s)
		w.n += int64(n)
		w.err = err
	}
	w.zeros(padLen(int64(len(s))))
}

func (w *Writer) zeros(n int) {
	var b [8]byte
	w.raw(b[:n])
}

func (w *Writer) raw(b []byte) {
	if w.err != nil {
		return
	}
	n, err := w.bw.Write(b)
	w.n += int64(n)
	w.err = err
}

func (w *Writer) formatError(format string, args ...any) error {
	return &FormatError{Offset: w.n, Reason: fmt.Sprintf(format, args...)}
}
