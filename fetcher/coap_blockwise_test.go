package fetcher

import (
	"fmt"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"erismount/eris"
)

func FuzzSliceBlock2(f *testing.F) {
	f.Add(32768, uint32(0x16), true, true)
	f.Add(1024, uint32(0), false, true)
	f.Add(32768, uint32(0x1f), true, false)
	f.Fuzz(func(t *testing.T, n int, opt uint32, hasOpt, udp bool) {
		if n < 0 || n > eris.BlockSize32K {
			return
		}
		sl, err := sliceBlock2(n, opt, hasOpt, udp)
		if err != nil {
			return
		}
		if sl.off < 0 || sl.off > sl.end || sl.end > n || (n > 0 && sl.off == sl.end) {
			t.Fatalf("n %d opt %#x: slice [%d:%d]", n, opt, sl.off, sl.end)
		}
		if udp && sl.end-sl.off > eris.BlockSize1K {
			t.Fatalf("n %d opt %#x: %d bytes in one UDP response", n, opt, sl.end-sl.off)
		}
		if sl.blockwise && sl.szx < blockwise.SZXBERT && int64(sl.end-sl.off) > blockSize(sl.szx) {
			t.Fatalf("n %d opt %#x: %d bytes in a block of %d", n, opt, sl.end-sl.off, blockSize(sl.szx))
		}
		if sl.more != (sl.end < n) {
			t.Fatalf("n %d opt %#x: more %v at %d of %d", n, opt, sl.more, sl.end, n)
		}
	})
}

func TestUploads(t *testing.T) {
	block := randomBlocks(t, 1, eris.BlockSize32K)[0]
	now := time.Now()
	var u uploads
	for off := 0; off < len(block); off += 1024 {
		more := off+1024 < len(block)
		body, complete, again, err := u.add("k", off, block[off:off+1024], more, now)
		if err != nil || again != nil || complete == more {
			t.Fatalf("block at %d: %v %v %v", off, complete, again, err)
		}
		if off == 1024 { // a retransmission of block 1 is harmless
			if _, c, a, err := u.add("k", off, block[off:off+1024], more, now); c || a != nil || err != nil {
				t.Fatalf("retransmitted block 1: %v %v %v", c, a, err)
			}
		}
		if complete && string(body) != string(block) {
			t.Fatal("reassembled body differs")
		}
	}
	u.finish("k", reply{res: resCreated})
	if _, _, again, err := u.add("k", 31*1024, block[31*1024:], false, now); err != nil || again == nil || again.res != resCreated {
		t.Fatalf("retransmitted last block: %v %v", again, err)
	}
	if _, _, _, err := u.add("other", 2048, block[:1024], true, now); err != errIncomplete {
		t.Fatalf("upload not from block 0: %v", err)
	}
	if _, _, _, err := u.add("k2", 0, block[:1024], true, now); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := u.add("k2", 1024, block[:1024], true, now.Add(uploadTTL+time.Second)); err != errIncomplete {
		t.Fatalf("continuation of an expired upload: %v", err)
	}
	var full uploads
	for i := range maxUploads {
		if _, _, _, err := full.add(string(rune('A'+i)), 0, block[:1024], true, now); err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
	}
	if _, _, _, err := full.add("one too many", 0, block[:1024], true, now); err != errBusy {
		t.Fatalf("upload %d: %v, want errBusy", maxUploads+1, err)
	}
	if _, _, _, err := full.add("later", 0, block[:1024], true, now.Add(uploadTTL+time.Second)); err != nil {
		t.Fatalf("upload once the others expired: %v", err)
	}
	// Finished uploads give way at once: a publisher sending blocks back
	// to back never waits uploadTTL for a slot.
	var busy uploads
	small := randomBlocks(t, 1, eris.BlockSize1K)[0]
	for i := range maxUploads + 10 {
		key := fmt.Sprint("done", i)
		if _, complete, _, err := busy.add(key, 0, small, false, now); err != nil || !complete {
			t.Fatalf("finished upload %d: %v", i, err)
		}
		busy.finish(key, reply{res: resCreated})
	}
}
