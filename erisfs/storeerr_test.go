package erisfs_test

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/fstest"

	"erismount/eris"
	"erismount/erisfs"
	"erismount/narinfo/nar"
)

var errDiskFull = errors.New("disk full")

// failingPutter fails every put after the first n.
type failingPutter struct{ n atomic.Int64 }

func (f *failingPutter) PutBlock(context.Context, eris.Ref, []byte) error {
	if f.n.Add(-1) < 0 {
		return errDiskFull
	}
	return nil
}

// TestStoreErrorReported: a store that fails makes every encoder return the
// store's error, not the "context canceled" of the work it stopped.
func TestStoreErrorReported(t *testing.T) {
	fsys := fstest.MapFS{}
	for i := range 40 {
		fsys[string(rune('a'+i%26))+"/"+string(rune('a'+i/26))] = &fstest.MapFile{Data: bytes.Repeat([]byte{byte(i)}, 70000)}
	}
	var narBuf bytes.Buffer
	if err := nar.WriteFS(context.Background(), &narBuf, fsys); err != nil {
		t.Fatal(err)
	}
	for name, encode := range map[string]func(p eris.BlockPutter) error{
		"fs": func(p eris.BlockPutter) error {
			_, _, err := erisfs.EncodeFS(context.Background(), fsys, p, erisfs.EncodeOptions{})
			return err
		},
		"nar": func(p eris.BlockPutter) error {
			_, _, err := erisfs.EncodeNar(context.Background(), bytes.NewReader(narBuf.Bytes()), p, erisfs.EncodeOptions{})
			return err
		},
	} {
		p := &failingPutter{}
		p.n.Store(5)
		err := encode(p)
		if !errors.Is(err, errDiskFull) {
			t.Errorf("%s: %v, want the store's error", name, err)
		}
	}
}
