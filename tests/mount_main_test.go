package tests

import (
	"os"
	"testing"

	"erismount/tests/testenv"
)

// TestMain removes the erismount binary testenv builds for the CLI tests.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
