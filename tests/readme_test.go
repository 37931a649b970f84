package tests

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// setupCommands returns the shell commands of the fenced code blocks in
// README.md's "Set-up" section, in order: the main job, then the tests.
func setupCommands(t *testing.T, readme string) []string {
	t.Helper()
	f, err := os.Open(readme)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	var in, fence bool
	var block []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.HasPrefix(line, "## Set-up")
		case in && strings.HasPrefix(line, "```"):
			if fence {
				cmds = append(cmds, strings.Join(block, "\n"))
				block = nil
			}
			fence = !fence
		case in && fence:
			block = append(block, line)
		}
	}
	return cmds
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// TestReadmeSetup follows README.md as a new user would: on a clean checkout
// (a git clone of this commit, or a copy of the tree when it is not a git
// checkout), the first set-up command runs the demo end to end; the second
// is the test command, and .ci/run runs exactly it.
func TestReadmeSetup(t *testing.T) {
	root := repoRoot(t)
	cmds := setupCommands(t, filepath.Join(root, "README.md"))
	if len(cmds) != 2 {
		t.Fatalf("README's Set-up section has %d commands, want 2 (the main job, then the tests): %q", len(cmds), cmds)
	}
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	var ciTest string
	for _, line := range strings.Split(string(ci), "\n") {
		if strings.Contains(line, "go test") {
			ciTest = strings.TrimSpace(line)
		}
	}
	if ciTest != strings.TrimSpace(cmds[1]) {
		t.Errorf(".ci/run runs %q, README's test command is %q", ciTest, cmds[1])
	}
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Skipf("the demo mounts with FUSE as root; here /dev/fuse: %v, euid %d", err, os.Geteuid())
	}
	if testing.Short() {
		t.Skip("the clean-checkout demo builds the project: skipped with -short")
	}

	clean := filepath.Join(t.TempDir(), "erismount")
	if _, err := os.Stat(filepath.Join(root, ".git")); err == nil {
		out, err := exec.Command("git", "clone", "--quiet", root, clean).CombinedOutput()
		if err != nil {
			t.Fatalf("git clone: %v\n%s", err, out)
		}
		// Test what is checked out here, committed or not: overlay the
		// working tree's tracked files.
		files, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
			if data, err := os.ReadFile(filepath.Join(root, f)); err == nil {
				os.MkdirAll(filepath.Dir(filepath.Join(clean, f)), 0o755)
				os.WriteFile(filepath.Join(clean, f), data, 0o644)
			}
		}
	} else if out, err := exec.Command("cp", "-a", root, clean).CombinedOutput(); err != nil {
		t.Fatalf("copy the tree: %v\n%s", err, out)
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", cmds[0])
	cmd.Dir = clean
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_CACHE_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmds[0], err, out)
	}
	for _, want := range []string{"published urn:eris:", "bin/hello says:", "from the peer", "unmounting"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("%q printed no %q:\n%s", cmds[0], want, out)
		}
	}
}
