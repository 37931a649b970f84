package narinfo_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"erismount/narinfo"
	"erismount/narinfo/nar"
	"erismount/narinfo/nar/nartest"
)

// TestCopyInNar: a nar stream lands as a canonical store item; a tampered,
// truncated or failing stream leaves nothing.
func TestCopyInNar(t *testing.T) {
	ctx := context.Background()
	src := nartest.Build(t, filepath.Join(t.TempDir(), "src"), nartest.Tree())
	var buf bytes.Buffer
	hw := nar.NewHashingWriter(&buf)
	if err := nar.WriteFS(ctx, hw, nar.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	want := hw.Sum()
	good := buf.Bytes()

	store := scratchStore(t)
	if err := narinfo.CopyInNar(ctx, bytes.NewReader(good), store, "/gnu/store/"+itemBase, want, narinfo.CopyInOptions{}); err != nil {
		t.Fatal(err)
	}
	checkLanded(t, store, itemBase, want)

	// One byte of a file's content changed: still a well-formed nar.
	tampered := bytes.Clone(good)
	for i := 0; ; {
		j := bytes.Index(tampered[i:], []byte("contents"))
		if j < 0 {
			t.Fatal("no non-empty file in the nar")
		}
		at := i + j + 8 // the content's 8-byte length, then the content
		if binary.LittleEndian.Uint64(tampered[at:]) > 0 {
			tampered[at+8] ^= 1
			break
		}
		i = at
	}
	for _, c := range []struct {
		name string
		r    io.Reader
		want error
	}{
		{"tampered", bytes.NewReader(tampered), narinfo.ErrMismatch},
		{"truncated", bytes.NewReader(good[:len(good)-100]), nar.ErrFormat},
		{"failing", io.MultiReader(bytes.NewReader(good[:len(good)/2]), iotestErr{}), errSource},
	} {
		t.Run(c.name, func(t *testing.T) {
			store := scratchStore(t)
			err := narinfo.CopyInNar(ctx, c.r, store, itemBase, want, narinfo.CopyInOptions{})
			if !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
			if got := storeEntries(t, store); len(got) != 0 {
				t.Errorf("store holds %v after a failed copy", got)
			}
		})
	}
}

var errSource = errors.New("source failed")

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errSource }
