package gobuildcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// cacheDir is a temp dir for a cache. Not t.TempDir: opening a fresh cache
// starts a background trim pass in the library that may still be writing
// when the test ends, so removal is retried for a moment.
func cacheDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gobuildcache-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := os.RemoveAll(dir)
			if err == nil {
				return
			}
			if i == 50 {
				t.Errorf("removing %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir
}

func openTest(t *testing.T) *Cache {
	t.Helper()
	c, err := Open(Config{CacheDir: cacheDir(t), Stats: Bool(false)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func id(s string) []byte {
	h := sha256.Sum256([]byte("action " + s))
	return h[:]
}

func outputID(body []byte) []byte {
	h := sha256.Sum256(body)
	return h[:]
}

func TestPutGetRoundTrip(t *testing.T) {
	c := openTest(t)
	ctx := context.Background()
	if _, err := c.Get(ctx, id("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get before Put: %v, want ErrNotFound", err)
	}
	body := []byte("compiled package")
	start := time.Now().Add(-2 * time.Second)
	p, err := c.PutBytes(ctx, id("a"), outputID(body), body)
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.Get(ctx, id("a"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.OutputID, outputID(body)) || e.Size != int64(len(body)) || e.DiskPath != p.DiskPath {
		t.Fatalf("Get = %+v, put %+v", e, p)
	}
	if e.Time.Before(start) || e.Time.After(time.Now().Add(time.Second)) {
		t.Fatalf("Time %v is not about now", e.Time)
	}
	if got, _ := os.ReadFile(e.DiskPath); !bytes.Equal(got, body) {
		t.Fatalf("DiskPath holds %q", got)
	}
	s, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Puts != 1 || s.Hits != 1 || s.Misses != 1 || s.BytesIn != uint64(len(body)) {
		t.Fatalf("Stats = %+v", s)
	}
	if err := c.ClearLocal(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, id("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after ClearLocal: %v", err)
	}
}

func TestPutStreamsReadersAndFiles(t *testing.T) {
	c := openTest(t)
	ctx := context.Background()
	// Bigger than a pipe buffer, so the copy goroutine and the library overlap.
	big := bytes.Repeat([]byte("0123456789abcdef"), 300_000)
	e, err := c.Put(ctx, id("reader"), outputID(big), bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	if e.Size != int64(len(big)) {
		t.Fatalf("size %d", e.Size)
	}

	path := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(path, []byte("skip:file body"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	// An *os.File is read from its current offset.
	e, err = c.Put(ctx, id("file"), outputID([]byte("file body")), f)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(e.DiskPath); string(got) != "file body" {
		t.Fatalf("stored %q", got)
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("disk on fire")
	}
	r.n--
	return copy(p, "xxxx"), nil
}

func TestPutErrors(t *testing.T) {
	c := openTest(t)
	ctx := context.Background()
	body := []byte("body")
	_, err := c.Put(ctx, id("x"), outputID([]byte("other")), bytes.NewReader(body))
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("wrong OutputID: %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeIntegrity || !strings.Contains(e.Msg, "hash") {
		t.Fatalf("error %#v", err)
	}
	if _, err := c.Get(ctx, id("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused put stored something: %v", err)
	}
	if _, err := c.PutBytes(ctx, []byte("short"), outputID(body), body); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("short ActionID: %v", err)
	}
	if _, err := c.Get(ctx, nil); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("nil ActionID: %v", err)
	}
	_, err = c.Put(ctx, id("x"), outputID(body), &failingReader{n: 3})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("reader error: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Put(cctx, id("x"), outputID(body), bytes.NewReader(body)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := c.Get(cctx, id("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// blockingReader yields a little, then blocks until released.
type blockingReader struct {
	release chan struct{}
	sent    bool
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if !r.sent {
		r.sent = true
		return copy(p, "partial"), nil
	}
	<-r.release
	return 0, io.EOF
}

func TestPutCancelMidBody(t *testing.T) {
	c := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	r := &blockingReader{release: make(chan struct{})}
	defer close(r.release)
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	_, err := c.Put(ctx, id("slow"), outputID([]byte("partial and more")), r)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put = %v, want context.Canceled", err)
	}
	if _, err := c.Get(context.Background(), id("slow")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a cancelled put stored something: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	_, err := Open(Config{MaxSize: "a lot"})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "max-size") {
		t.Fatalf("bad max-size: %v", err)
	}
	_, err = Open(Config{Extra: map[string]string{"no-such-setting": "1"}})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("unknown key: %v", err)
	}
	_, err = Open(Config{Backend: "s3"})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "s3-bucket") {
		t.Fatalf("s3 without bucket: %v", err)
	}
}

func TestReadEnv(t *testing.T) {
	t.Setenv("GOBUILDCACHE_ERROR_RATE", "9")
	dir := cacheDir(t)
	if _, err := Open(Config{CacheDir: dir, ReadEnv: true}); !errors.Is(err, ErrConfig) ||
		!strings.Contains(err.Error(), "GOBUILDCACHE_ERROR_RATE") {
		t.Fatalf("ReadEnv: %v", err)
	}
	c, err := Open(Config{CacheDir: dir})
	if err != nil {
		t.Fatalf("without ReadEnv the environment is ignored: %v", err)
	}
	c.Close()
}

func TestCloseIsIdempotentAndLaterCallsFail(t *testing.T) {
	c := openTest(t)
	ctx := context.Background()
	body := []byte("b")
	if _, err := c.PutBytes(ctx, id("c"), outputID(body), body); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checks := map[string]error{}
	_, checks["Get"] = c.Get(ctx, id("c"))
	_, checks["PutBytes"] = c.PutBytes(ctx, id("c"), outputID(body), body)
	_, checks["Put"] = c.Put(ctx, id("c"), outputID(body), bytes.NewReader(body))
	_, checks["Stats"] = c.Stats()
	checks["ClearLocal"] = c.ClearLocal()
	checks["Serve"] = c.Serve(strings.NewReader(""), io.Discard)
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestConcurrentUseAndClose(t *testing.T) {
	c := openTest(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				body := []byte(fmt.Sprintf("body %d %d", g, i))
				key := id(fmt.Sprintf("%d/%d", g, i))
				var err error
				if i%2 == 0 {
					_, err = c.PutBytes(ctx, key, outputID(body), body)
				} else {
					_, err = c.Put(ctx, key, outputID(body), bytes.NewReader(body))
				}
				if err != nil {
					t.Error(err)
					return
				}
				e, err := c.Get(ctx, key)
				if err != nil || e.Size != int64(len(body)) {
					t.Errorf("Get: %+v, %v", e, err)
					return
				}
				if _, err := c.Stats(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if s, _ := c.Stats(); s.Puts != 320 {
		t.Fatalf("puts = %d", s.Puts)
	}

	// Close racing with callers: each call succeeds or says ErrClosed.
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				body := []byte(fmt.Sprint(g, i))
				_, err := c.PutBytes(ctx, id(fmt.Sprint("race", g, i)), outputID(body), body)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(10 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func TestFinalizerClosesAnAbandonedCache(t *testing.T) {
	dir := cacheDir(t)
	for range 5 {
		c, err := Open(Config{CacheDir: dir, Stats: Bool(false)})
		if err != nil {
			t.Fatal(err)
		}
		_ = c // dropped without Close
	}
	runtime.GC()
	runtime.GC()
	// The directory is still usable by a new handle.
	c, err := Open(Config{CacheDir: dir, Stats: Bool(false)})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// Every field the library reports has a home in Stats, so a new counter is
// noticed here rather than silently dropped.
func TestStatsStructCoversTheLibrarysFields(t *testing.T) {
	c := openTest(t)
	js, err := c.StatsJSON()
	if err != nil {
		t.Fatal(err)
	}
	var fromLib map[string]any
	if err := json.Unmarshal(js, &fromLib); err != nil {
		t.Fatal(err)
	}
	ours, _ := json.Marshal(Stats{})
	var known map[string]any
	if err := json.Unmarshal(ours, &known); err != nil {
		t.Fatal(err)
	}
	for k := range fromLib {
		if _, ok := known[k]; !ok {
			t.Errorf("Stats has no field for the library's %q", k)
		}
	}
}

// TestHostileIDsAreRefused: IDs that try path traversal or have the wrong
// length are refused at every entry point before the library touches a path,
// and nothing is written.
func TestHostileIDsAreRefused(t *testing.T) {
	dir := cacheDir(t)
	c, err := Open(Config{CacheDir: dir, Stats: Bool(false)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	body := bytes.Repeat([]byte("b"), 1<<20)
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	good := id("good")
	for _, bad := range [][]byte{
		nil, []byte("../../etc/passwd"), []byte("a/b"), []byte("/etc/passwd"),
		[]byte("..\x00/.."), []byte("ünïcödé/../.."), bytes.Repeat([]byte("a"), 31),
		bytes.Repeat([]byte("a"), 33), bytes.Repeat([]byte("a"), 64),
	} {
		if _, err := c.Get(ctx, bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Get(%q): %v", bad, err)
		}
		if _, err := c.PutBytes(ctx, bad, outputID(body), body); !errors.Is(err, ErrInvalidID) {
			t.Errorf("PutBytes action %q: %v", bad, err)
		}
		if _, err := c.PutBytes(ctx, good, bad, body); !errors.Is(err, ErrInvalidID) {
			t.Errorf("PutBytes output %q: %v", bad, err)
		}
		// Streamed: refused before the body is read, and Put does not hang on it.
		if _, err := c.Put(ctx, bad, outputID(body), bytes.NewReader(body)); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Put action %q: %v", bad, err)
		}
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(ctx, good, bad, f); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Put file output %q: %v", bad, err)
		}
		f.Close()
	}
	for _, sub := range []string{"v1/a", "v1/o", "v1/tmp"} {
		err := filepath.Walk(filepath.Join(dir, sub), func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				t.Errorf("a refused put wrote %s", p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
