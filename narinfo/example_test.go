package narinfo_test

import (
	"fmt"
	"os"

	"erismount/narinfo"
)

// Verify a signed narinfo against an ACL, as guix substitute would.
func ExampleNarinfo_Verify() {
	raw, _ := os.ReadFile("testdata/vector-b.narinfo")
	aclText, _ := os.ReadFile("testdata/test.acl")
	n, err := narinfo.Parse(raw)
	if err != nil {
		fmt.Println(err)
		return
	}
	acl, err := narinfo.ParseACL(aclText)
	if err != nil {
		fmt.Println(err)
		return
	}
	outcome, err := n.Verify(acl)
	fmt.Println(n.StorePath, n.NarSize, outcome, err)
	// Output:
	// /gnu/store/1h9kqc2m3vrm8yfdab3lw9ajxgg9xjr5-erismount-tree-1.0 1256 valid <nil>
}
