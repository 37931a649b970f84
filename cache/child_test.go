package cache_test

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"erismount/cache"
)

// Child processes: the test binary re-executed with childEnv set runs one
// of these instead of the tests, and exits with its result.

// Environment of the children.
const (
	childPath  = "ERISMOUNT_CACHE_TEST_PATH"  // the store
	childBatch = "ERISMOUNT_CACHE_TEST_BATCH" // crash: blocks per batch
	childFirst = "ERISMOUNT_CACHE_TEST_FIRST" // crash: first batch number
)

func runChild(role string) int {
	switch role {
	case "open":
		return childOpen()
	case "crash":
		return childCrash()
	}
	fmt.Fprintf(os.Stderr, "unknown child role %q\n", role)
	return 2
}

// childOpen opens the store and prints the error, or "ok".
func childOpen() int {
	s, err := cache.OpenSQLite(os.Getenv(childPath), cache.SQLiteOptions{})
	if err != nil {
		fmt.Println(err)
		return 0
	}
	fmt.Println("ok")
	if err := s.Close(); err != nil {
		fmt.Println(err)
	}
	return 0
}

// childCrash writes batches of blocks until it is killed. It holds a mount
// pin tagging every block, prints "begin N" before putting batch N and
// "committed N" once Flush says batch N is committed.
func childCrash() int {
	ctx := context.Background()
	s, err := cache.OpenSQLite(os.Getenv(childPath), cache.SQLiteOptions{SoftQuota: cache.Unlimited, MaxBatch: 50})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	batch, _ := strconv.Atoi(os.Getenv(childBatch))
	first, _ := strconv.Atoi(os.Getenv(childFirst))
	pin, err := s.PinMount(ctx, fmt.Sprintf("urn:crash:%d", first))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	store := pin.View(s)
	for n := first; ; n++ {
		fmt.Printf("begin %d\n", n)
		for _, b := range crashBatch(n, batch) {
			if err := store.PutBlock(ctx, b.ref, b.b); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if err := s.Flush(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("committed %d\n", n)
	}
}

// crashBatch is batch n of the crash test: 1 KiB and 32 KiB blocks.
func crashBatch(n, size int) []testBlock {
	bs := blocks(uint64(n)<<20, size, 1024)
	for i := 0; i < len(bs); i += 4 {
		bs[i] = blocks(uint64(n)<<20+uint64(i)+1<<19, 1, 32768)[0]
	}
	return bs
}
