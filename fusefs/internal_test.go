package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"
	"time"

	"erismount/eris"
	"erismount/eris/eristest"
)

func TestFormatLocal(t *testing.T) {
	for _, tc := range []struct {
		have, total int64
		want        string
	}{
		{0, 0, "1.0000 0/0"},
		{0, 7, "0.0000 0/7"},
		{7, 7, "1.0000 7/7"},
		{1, 4, "0.2500 1/4"},
		{99999, 100000, "0.9999 99999/100000"}, // rounded down: 1 only when complete
		{2, 3, "0.6666 2/3"},
	} {
		if got := formatLocal(tc.have, tc.total); got != tc.want {
			t.Errorf("formatLocal(%d, %d) = %q, want %q", tc.have, tc.total, got, tc.want)
		}
	}
}

func TestToErrno(t *testing.T) {
	ref := eris.Ref{1}
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"missing block", eris.NotFound(ref), syscall.EIO},
		{"corrupt block", &eris.BlockError{Ref: ref, Err: fmt.Errorf("%w: bad", eris.ErrCorrupt)}, syscall.EIO},
		{"deadline", fmt.Errorf("read: %w", context.DeadlineExceeded), syscall.EIO},
		{"no such path", &fs.PathError{Op: "lookup", Path: "x", Err: fs.ErrNotExist}, syscall.ENOENT},
		{"cancelled below", &eris.BlockError{Ref: ref, Err: fmt.Errorf("connection closed: %w", context.Canceled)}, syscall.EIO},
		{"block error wrapping a missing file", &eris.BlockError{Ref: ref, Err: fs.ErrNotExist}, syscall.EIO},
		{"anything else", errors.New("peer on fire"), syscall.EIO},
	} {
		if got := toErrno(tc.err); got != tc.want {
			t.Errorf("%s: toErrno(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/mnt/x":              "/mnt/x",
		`/mnt/with\040space`:  "/mnt/with space",
		`/tab\011and\134back`: "/tab\tand\\back",
		`/odd\04`:             `/odd\04`,
		`/not\999octal`:       `/not\999octal`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSeenSet(t *testing.T) {
	var s seenSet
	if !s.add("a") || s.add("a") || !s.add("b") {
		t.Fatal("add does not report new keys once")
	}
	for i := range maxSeen + 10 {
		s.add(fmt.Sprint(i))
	}
	if len(s.m) > maxSeen {
		t.Errorf("seen set grew to %d, bound %d", len(s.m), maxSeen)
	}
}

// TestDoAbandons: an operation whose function ignores its context returns
// within the deadline and grace, and its late hook runs once it is done.
func TestDoAbandons(t *testing.T) {
	m := &mountFS{opts: Options{Deadline: 50 * time.Millisecond}.withDefaults(), st: new(counters)}
	release := make(chan struct{})
	lateRan := make(chan struct{})
	start := time.Now()
	err := m.do(context.Background(), func(context.Context) error {
		<-release
		return nil
	}, func() { close(lateRan) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("do with a stuck function: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 50*time.Millisecond+grace+5*time.Second {
		t.Errorf("do returned after %v", took)
	}
	if m.st.abandoned.Load() != 1 {
		t.Errorf("abandoned = %d, want 1", m.st.abandoned.Load())
	}
	close(release)
	<-lateRan
}

// TestStreamPlan: a sequential reader gets chunks prefetched ahead of it,
// within the memory budget; a jump elsewhere drops them; every chunk's
// memory is given back when the stream closes.
func TestStreamPlan(t *testing.T) {
	ctx := context.Background()
	store := eristest.NewStore()
	content := make([]byte, 20*raChunk+100)
	for i := range content {
		content[i] = byte(i * 7)
	}
	rc, err := eris.Encode(ctx, bytes.NewReader(content), store, eris.EncodeOptions{BlockSize: eris.BlockSize32K})
	if err != nil {
		t.Fatal(err)
	}
	r, err := eris.NewReader(ctx, rc, store)
	if err != nil {
		t.Fatal(err)
	}
	var st counters
	p := newPrefetcher(4*raChunk, 6*raChunk, &st)
	s := p.stream(ctx, r, int64(len(content)), time.Second)

	read := func(off, n int64) []part {
		parts := s.plan(off, off+n)
		for _, pt := range parts {
			if pt.c != nil {
				<-pt.c.done
				if pt.c.err != nil {
					t.Fatalf("chunk at %d: %v", pt.c.off, pt.c.err)
				}
				if !bytes.Equal((*pt.c.bufp)[pt.lo-pt.c.off:pt.hi-pt.c.off], content[pt.lo:pt.hi]) {
					t.Fatalf("chunk at %d: wrong bytes for [%d, %d)", pt.c.off, pt.lo, pt.hi)
				}
				pt.c.unref()
			}
		}
		return parts
	}
	fromChunks := func(parts []part) (n int64) {
		for _, pt := range parts {
			if pt.c != nil {
				n += pt.hi - pt.lo
			}
		}
		return n
	}
	var served int64
	for off := int64(0); off < 8*raChunk; off += 128 << 10 {
		served += fromChunks(read(off, 128<<10))
	}
	if served == 0 {
		t.Fatalf("a sequential reader of 8 MiB got nothing from readahead")
	}
	s.mu.Lock()
	held := len(s.chunks)
	s.mu.Unlock()
	if held > 6 || len(p.slots) > 6 {
		t.Errorf("stream holds %d chunks, %d slots taken; budget 6", held, len(p.slots))
	}
	// A jump far away drops the chunks and starts over.
	if parts := read(18*raChunk, 4096); len(parts) != 1 || parts[0].c != nil {
		t.Errorf("a random read was served from %v", parts)
	}
	s.mu.Lock()
	held = len(s.chunks)
	s.mu.Unlock()
	if held != 0 {
		t.Errorf("after a jump the stream still holds %d chunks", held)
	}
	s.close()
	// Fetches in flight finish and give their memory back.
	deadline := time.Now().Add(10 * time.Second)
	for len(p.slots) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(p.slots) != 0 || len(p.busy) != 0 {
		t.Errorf("after close: %d memory slots and %d fetch slots still taken", len(p.slots), len(p.busy))
	}
	t.Logf("served %d of %d bytes from chunks; prefetched %d", served, 8*raChunk, st.raBytes.Load())
}
