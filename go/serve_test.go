package gobuildcache

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A client side of the protocol, enough to drive a session by hand.
type client struct {
	t    *testing.T
	w    io.Writer
	resp *bufio.Scanner
}

type response struct {
	ID            int64
	Err           string
	KnownCommands []string
	Miss          bool
	OutputID      []byte
	Size          int64
	Time          *time.Time
	DiskPath      string
}

func (c *client) send(format string, args ...any) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.w, format, args...); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) next() response {
	c.t.Helper()
	if !c.resp.Scan() {
		c.t.Fatalf("no response: %v", c.resp.Err())
	}
	var r response
	if err := json.Unmarshal(c.resp.Bytes(), &r); err != nil {
		c.t.Fatalf("response %q: %v", c.resp.Text(), err)
	}
	return r
}

// session runs get (miss), put, get (hit), close over w (requests) and r
// (responses).
func session(t *testing.T, w io.WriteCloser, r io.Reader) {
	c := &client{t: t, w: w, resp: bufio.NewScanner(r)}
	if hello := c.next(); hello.ID != 0 || !strings.Contains(strings.Join(hello.KnownCommands, ","), "close") {
		t.Fatalf("hello = %+v", hello)
	}
	b64 := base64.StdEncoding.EncodeToString
	action, body := id("served"), []byte("package served")
	c.send(`{"ID":1,"Command":"get","ActionID":%q}`+"\n\n", b64(action))
	if r := c.next(); r.ID != 1 || !r.Miss {
		t.Fatalf("get = %+v", r)
	}
	c.send(`{"ID":2,"Command":"put","ActionID":%q,"OutputID":%q,"BodySize":%d}`+"\n%q\n\n",
		b64(action), b64(outputID(body)), len(body), b64(body))
	put := c.next()
	if put.ID != 2 || put.Err != "" || put.DiskPath == "" {
		t.Fatalf("put = %+v", put)
	}
	c.send(`{"ID":3,"Command":"get","ActionID":%q}`+"\n\n", b64(action))
	if r := c.next(); r.ID != 3 || r.Miss || r.DiskPath != put.DiskPath || r.Size != int64(len(body)) || r.Time == nil {
		t.Fatalf("get = %+v", r)
	}
	c.send(`{"ID":4,"Command":"close"}` + "\n\n")
	if r := c.next(); r.ID != 4 {
		t.Fatalf("close = %+v", r)
	}
	w.Close()
}

func TestServeOverReaderAndWriter(t *testing.T) {
	c := openTest(t)
	reqR, reqW := io.Pipe()
	respR, respW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		// io.Pipe ends are not files: Serve bridges them through os pipes.
		done <- c.Serve(reqR, respW)
		respW.Close()
	}()
	session(t, reqW, respR)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s, _ := c.Stats(); s.Hits != 1 || s.Puts != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestServeOverFiles(t *testing.T) {
	c := openTest(t)
	reqR, reqW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- c.Serve(reqR, respW)
		respW.Close()
		reqR.Close()
	}()
	session(t, reqW, respR)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestServeRejectsGarbage(t *testing.T) {
	c := openTest(t)
	err := c.Serve(strings.NewReader("this is not a request\n"), io.Discard)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("Serve = %v, want ErrProtocol", err)
	}
	// End of input without close is a normal end.
	if err := c.Serve(strings.NewReader(""), io.Discard); err != nil {
		t.Fatalf("Serve on empty input = %v", err)
	}
}

// goEnv is the environment for a go command we run: our own toolchain only,
// module mode, and nothing of the caller's cache settings.
func goEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GOCACHEPROG=") || strings.HasPrefix(kv, "GOBUILDCACHE_") ||
			strings.HasPrefix(kv, "GOFLAGS=") || strings.HasPrefix(kv, "GOTOOLCHAIN=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, append([]string{"GOTOOLCHAIN=local", "GOFLAGS=-mod=mod"}, extra...)...)
}

func goTool(t *testing.T) string {
	t.Helper()
	g, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("this test needs the go command on PATH: %v", err)
	}
	return g
}

func readStats(t *testing.T, path string) Stats {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the helper wrote no stats: %v", err)
	}
	var s Stats
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A Go program using Serve is the GOCACHEPROG helper of a real go build; the
// second build of the same module, with a fresh GOCACHE, is served from the
// cache the first one filled.
func TestServeAsGOCACHEPROGForGoBuild(t *testing.T) {
	goCmd := goTool(t)
	tmp := t.TempDir()
	helper := filepath.Join(tmp, "gobuildcache-go")
	build := exec.Command(goCmd, "build", "-o", helper, "./cmd/gobuildcache-go")
	build.Env = goEnv()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the helper: %v\n%s", err, out)
	}

	mod := filepath.Join(tmp, "tiny")
	files := map[string]string{
		"go.mod":         "module example.com/tiny\n\ngo 1.24\n",
		"main.go":        "package main\n\nimport \"example.com/tiny/greet\"\n\nfunc main() { println(greet.Hello()) }\n",
		"greet/greet.go": "package greet\n\nfunc Hello() string { return \"hello\" }\n",
		"greet/other.go": "package greet\n\nvar Count = 3\n",
	}
	for name, text := range files {
		p := filepath.Join(mod, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	cache := cacheDir(t)
	run := func(n int) Stats {
		statsFile := filepath.Join(tmp, fmt.Sprintf("stats%d.json", n))
		cmd := exec.Command(goCmd, "build", "-o", filepath.Join(tmp, "tiny-bin"), ".")
		cmd.Dir = mod
		cmd.Env = goEnv(
			"GOCACHEPROG="+helper,
			"GOCACHE="+filepath.Join(tmp, fmt.Sprintf("gocache%d", n)),
			"GOBUILDCACHE_CACHE_DIR="+cache,
			"GOBUILDCACHE_STATS_JSON="+statsFile,
			"GOBUILDCACHE_PRINT_STATS=false",
		)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %d: %v\n%s", n, err, out)
		}
		return readStats(t, statsFile)
	}
	first := run(1)
	if first.Puts == 0 || first.Misses == 0 {
		t.Fatalf("first build: %+v", first)
	}
	second := run(2)
	t.Logf("first build: %d gets, %d puts; second: %d gets, %d hits, %d puts",
		first.Gets, first.Puts, second.Gets, second.Hits, second.Puts)
	// A couple of actions are keyed on things a fresh GOCACHE changes; nearly
	// all the rest must hit.
	if second.Hits == 0 || second.Hits*10 < second.Gets*9 {
		t.Fatalf("second build was not served from the cache: %+v", second)
	}
}
