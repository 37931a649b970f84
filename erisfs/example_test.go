package erisfs_test

import (
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"

	"erismount/eris/eristest"
	"erismount/erisfs"
)

// Encode a small tree, open it by its URN and read it through io/fs.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "erisfs-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Mkdir(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "hello"), []byte("#!/bin/sh\necho hello\n"), 0o755)
	os.Symlink("bin/hello", filepath.Join(dir, "hello"))

	store := eristest.NewStore() // any eris.BlockStore: cache.SQLite, a peer…
	rc, stats, err := erisfs.EncodeDir(ctx, dir, store, erisfs.EncodeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(stats.Files, "file,", stats.Symlinks, "symlink")

	tree, err := erisfs.Open(ctx, rc, store, erisfs.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for e := range tree.All() {
		fmt.Println(e.Ino(), "/"+e.Path(), e.Kind(), e.Mode())
	}
	data, err := fs.ReadFile(tree.FS(ctx), "hello") // follows the symlink
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(data))
	// Output:
	// 1 file, 1 symlink
	// 1 / directory dr-xr-xr-x
	// 2 /bin directory dr-xr-xr-x
	// 3 /bin/hello executable file -r-xr-xr-x
	// 4 /hello symlink Lrwxrwxrwx
	// #!/bin/sh
	// echo hello
}
