package eris_test

import (
	"context"
	"fmt"
	"io"
	"strings"

	"erismount/eris"
	"erismount/eris/eristest"
)

func ExampleEncode() {
	ctx := context.Background()
	store := eristest.NewStore()
	rc, err := eris.Encode(ctx, strings.NewReader("Hello world!"), store, eris.EncodeOptions{BlockSize: eris.BlockSize1K})
	if err != nil {
		panic(err)
	}
	fmt.Println(rc.URN())
	fmt.Println(store.Len(), "block")
	// Output:
	// urn:eris:BIAD77QDJMFAKZYH2DXBUZYAP3MXZ3DJZVFYQ5DFWC6T65WSFCU5S2IT4YZGJ7AC4SYQMP2DM2ANS2ZTCP3DJJIRV733CRAAHOSWIYZM3M
	// 1 block
}

func ExampleNewReader() {
	ctx := context.Background()
	store := eristest.NewStore()
	rc, _ := eris.Encode(ctx, strings.NewReader(strings.Repeat("0123456789", 10000)), store, eris.EncodeOptions{})
	r, err := eris.NewReader(ctx, rc, store)
	if err != nil {
		panic(err)
	}
	buf := make([]byte, 10)
	store.ResetCounts()
	if _, err := r.ReadAt(buf, 54321); err != nil {
		panic(err)
	}
	size, _ := r.Size()
	fmt.Printf("%s, level %d, %d fetches for the read and size; size %d\n", buf, rc.Level(), store.Gets(), size)
	_, _ = r.Seek(-5, io.SeekEnd)
	tail, _ := io.ReadAll(r)
	fmt.Printf("%s\n", tail)
	// Output:
	// 1234567890, level 1, 3 fetches for the read and size; size 100000
	// 56789
}
