//go:build unix

package testenv

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ChildEnv is set in the environment of a process started by StartChild,
// to the name of the test it runs as a child.
const ChildEnv = "IDEMQ_TEST_CHILD"

// childMark starts the lines a child writes for its parent, so they stand
// apart from the test framework's output.
const childMark = "idemq-child: "

// IsChild reports whether this process was started by StartChild to run
// test as a child.
func IsChild(test string) bool { return os.Getenv(ChildEnv) == test }

// ChildSay writes a line for the parent (see Child.Expect).
func ChildSay(format string, args ...any) {
	fmt.Fprintf(os.Stdout, childMark+format+"\n", args...)
}

// childIn reads the parent's lines in a child.
var childIn = bufio.NewReader(os.Stdin)

// ChildRead waits for a line from the parent (see Child.Send) and returns
// it without its newline.
func ChildRead() (string, error) {
	line, err := childIn.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// Child is a copy of the running test binary that runs one test as a
// helper process, for tests that must pause (SIGSTOP) or kill a real
// process. It is killed, if still running, when the test ends.
type Child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan error
}

// StartChild starts the test binary running only test, with ChildEnv set
// to test and env added to the environment. The child's lines written with
// ChildSay are read by Expect; everything else it writes is logged.
func StartChild(t testing.TB, test string, env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v=false")
	cmd.Env = append(append(os.Environ(), ChildEnv+"="+test), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start child: %v", err)
	}
	c := &Child{cmd: cmd, stdin: stdin, lines: make(chan string, 64), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), childMark); ok {
				c.lines <- l
			}
		}
		close(c.lines)
		c.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-c.done
		c.done <- nil
	})
	return c
}

// Expect waits up to timeout for the child's next line and fails the test
// unless it starts with prefix; it returns the rest of the line.
func (c *Child) Expect(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("testenv: child ended while the test waited for %q", prefix)
		}
		rest, found := strings.CutPrefix(l, prefix)
		if !found {
			t.Fatalf("testenv: child said %q, want %q...", l, prefix)
		}
		return strings.TrimSpace(rest)
	case <-time.After(timeout):
		t.Fatalf("testenv: child said nothing for %s, want %q", timeout, prefix)
	}
	return ""
}

// Send writes a line to the child's standard input (see ChildRead). A
// stopped child reads it when it continues.
func (c *Child) Send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		t.Fatalf("testenv: write to child: %v", err)
	}
}

// Signal sends sig (such as SIGSTOP or SIGCONT) to the child.
func (c *Child) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("testenv: signal %v to child: %v", sig, err)
	}
}

// Wait waits up to timeout for the child to exit and returns its exit
// error (nil for status 0).
func (c *Child) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("testenv: child still running after %s", timeout)
	}
	return nil
}
