package main_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startConsole starts `idemq console` with args and returns the URL it
// serves on; the process is stopped when the test ends.
func (tg target) startConsole(t *testing.T, args ...string) string {
	t.Helper()
	full := append([]string{"--db", tg.dbFlag, "--prefix", tg.prefix, "--actor", "oncall", "console"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := exec.CommandContext(ctx, binary(t), full...)
	cmd.Env = append(os.Environ(), "IDEMQ_DB=", "IDEMQ_NAMESRV=", "IDEMQ_CONSOLE_TOKEN=", "IDEMQ_CONSOLE_USER=", "IDEMQ_CONSOLE_PASSWORD=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		cancel()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("idemq console printed no address: %v", err)
	}
	m := regexp.MustCompile(`http://\S+`).FindString(line)
	if m == "" {
		t.Fatalf("idemq console said %q", line)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return m
}

func TestConsoleCommand(t *testing.T) {
	tg := targets(t)[0](t)
	tg.ok(t, "migrate")

	// Not loopback and no authentication: refused before listening.
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0"} {
		stderr, err := tg.runBriefly(t, "console", "--addr", addr)
		if err == nil || !strings.Contains(stderr, "refusing to serve the console on "+addr) {
			t.Errorf("--addr %s without auth: err %v, stderr %q", addr, err, stderr)
		}
	}
	if stderr, err := tg.runBriefly(t, "console", "--addr", "0.0.0.0:0", "--token", "short"); err == nil || !strings.Contains(stderr, "at least 16") {
		t.Errorf("short token: %v %q", err, stderr)
	}

	bury(t, tg.store(t), "payments", "payouts", "k-1", "wallet frozen")

	// Loopback without authentication: the --actor is the operator. With
	// no way to publish, it offers discard but not redrive.
	u := tg.startConsole(t, "--addr", "127.0.0.1:0")
	st, body := httpGet(t, u+"/", "")
	if st != http.StatusOK || !strings.Contains(body, "oncall") || !strings.Contains(body, "Consumer groups") {
		t.Fatalf("loopback console: %d\n%s", st, body)
	}
	if st, body := httpGet(t, u+"/dead", ""); st != http.StatusOK || strings.Contains(body, `id="redrive-all"`) || !strings.Contains(body, `id="discard-all"`) {
		t.Fatalf("console without a sender: %d\n%s", st, body)
	}

	// Redrive into the outbox: redrive is offered.
	u = tg.startConsole(t, "--addr", "127.0.0.1:0", "--via-outbox")
	if st, body := httpGet(t, u+"/dead", ""); st != http.StatusOK || !strings.Contains(body, `id="redrive-all"`) {
		t.Fatalf("--via-outbox console: %d\n%s", st, body)
	}

	// Any address with a token; read-only serves no action.
	const token = "console-token-0123456789"
	u = tg.startConsole(t, "--addr", "0.0.0.0:0", "--token", token, "--read-only")
	u = strings.Replace(u, "0.0.0.0", "127.0.0.1", 1)
	u = strings.Replace(u, "[::]", "127.0.0.1", 1)
	if st, _ := httpGet(t, u+"/dead", ""); st != http.StatusSeeOther && st != http.StatusOK {
		t.Fatalf("no token: %d", st)
	}
	if st, body := httpGet(t, u+"/dead", token); st != http.StatusOK || !strings.Contains(body, "read-only") {
		t.Fatalf("with the token: %d\n%s", st, body)
	}
	if st, _ := httpGet(t, u+"/dead/confirm?action=discard&all=1", token); st != http.StatusNotFound {
		t.Fatalf("read-only confirm: %d", st)
	}
}

// runBriefly runs the command for at most 10 seconds (a console that
// serves instead of refusing is stopped) and returns its stderr.
func (tg target) runBriefly(t *testing.T, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"--db", tg.dbFlag, "--prefix", tg.prefix, "--actor", "oncall"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), full...)
	cmd.Env = append(os.Environ(), "IDEMQ_DB=", "IDEMQ_NAMESRV=", "IDEMQ_CONSOLE_TOKEN=", "IDEMQ_CONSOLE_USER=", "IDEMQ_CONSOLE_PASSWORD=")
	var errb strings.Builder
	cmd.Stderr = &errb
	err := cmd.Run()
	return errb.String(), err
}

func httpGet(t *testing.T, u, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
