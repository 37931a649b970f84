// Package testenv holds the fixtures end-to-end tests share, so that each
// is written once: trees to publish (Spec, Sample, Wide), publishing them
// into a block store (Publish, OpenTree), a block getter that counts what
// it serves (Counting), mounting a tree in a temporary directory that is
// always unmounted when the test ends (Mount, RequireFUSE), comparing a
// mounted tree with its source byte for byte (CompareDirs), and a logger
// that writes to the test log (Logger).
//
// Everything takes a testing.TB, fails the test on error and cleans up
// with t.Cleanup.
//
//	src := testenv.Sample().WriteDir(t)
//	store := eristest.NewStore()
//	tree := testenv.OpenTree(t, testenv.Publish(t, src, store), store)
//	srv := testenv.Mount(t, tree, fusefs.Options{})
//	testenv.CompareDirs(t, src, srv.Dir())
package testenv
