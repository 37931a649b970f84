package nar_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing/fstest"

	"erismount/narinfo/nar"
)

// The NarHash and NarSize of a tree (nix-hash gives the same for it on
// disk), and its nar read back node by node.
func Example() {
	tree := fstest.MapFS{
		"bin/hello":       {Data: []byte("#!/bin/sh\necho hello\n"), Mode: 0o555},
		"share/doc/hello": {Data: []byte("Hello.\n"), Mode: 0o444},
	}
	var buf bytes.Buffer
	hw := nar.NewHashingWriter(&buf)
	if err := nar.WriteFS(context.Background(), hw, tree); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(hw.Sum().Size, hw.Sum().Hash)

	r := nar.NewReader(&buf)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%-10s %q %d\n", h.Type, h.Path, h.Size)
	}
	// Output:
	// 1032 sha256:0cvb9qaz14n54v20syxvxvaymgipb7xkqw7vvcf3k54hbm63pnp7
	// directory  "" 0
	// directory  "bin" 0
	// executable "bin/hello" 21
	// directory  "share" 0
	// directory  "share/doc" 0
	// regular    "share/doc/hello" 7
}
