package gobuildcache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// moto starts a real S3 server (moto_server, installed by
// scripts/test-servers.sh) on 127.0.0.1 with one bucket, and returns its
// endpoint. A missing server fails the test: it never skips.
func moto(t *testing.T, bucket string) string {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		t.Fatal("moto_server is not on PATH: run `bash scripts/test-servers.sh` (PyPI moto[server])")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodPut, endpoint+"/"+bucket, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("creating bucket %s: %s", bucket, resp.Status)
			}
			return endpoint
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server did not answer on %s: %v", endpoint, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// s3Env sets the GOBUILDCACHE_* variables for moto, as a user's CI would.
func s3Env(t *testing.T, endpoint, bucket string) {
	for k, v := range map[string]string{
		"GOBUILDCACHE_BACKEND":               "s3",
		"GOBUILDCACHE_S3_BUCKET":             bucket,
		"GOBUILDCACHE_AWS_ENDPOINT_URL_S3":   endpoint,
		"GOBUILDCACHE_AWS_S3_USE_PATH_STYLE": "true",
		"GOBUILDCACHE_AWS_REGION":            "us-east-1",
		"GOBUILDCACHE_AWS_ACCESS_KEY_ID":     "testing",
		"GOBUILDCACHE_AWS_SECRET_ACCESS_KEY": "testing",
		"GOBUILDCACHE_PRINT_STATS":           "false",
	} {
		t.Setenv(k, v)
	}
}

// A put followed by Close reaches the bucket: a fresh cache dir then hits.
func TestCloseUploadsAndAFreshDirGetsThem(t *testing.T) {
	endpoint := moto(t, "gbc-go")
	s3Env(t, endpoint, "gbc-go")
	ctx := context.Background()
	a, err := Open(Config{ReadEnv: true, CacheDir: cacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	flushed := []byte("flushed while open")
	if _, err := a.PutBytes(ctx, id("flushed"), outputID(flushed), flushed); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	closed := []byte("put, then Close at once")
	if _, err := a.PutBytes(ctx, id("closed"), outputID(closed), closed); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	b, err := Open(Config{ReadEnv: true, CacheDir: cacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for name, body := range map[string][]byte{"flushed": flushed, "closed": closed} {
		e, err := b.Get(ctx, id(name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := os.ReadFile(e.DiskPath)
		if err != nil || string(got) != string(body) {
			t.Fatalf("%s: %q, %v", name, got, err)
		}
	}
	s, err := b.Stats()
	if err != nil || s.RemoteHits != 2 {
		t.Fatalf("remote hits %d, %v", s.RemoteHits, err)
	}
}

// A store that never answers: Close gives up at CloseTimeout, says how many
// uploads it left, and has closed the cache all the same.
func TestCloseReportsUploadsLeft(t *testing.T) {
	hole, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	s3Env(t, "http://"+hole.Addr().String(), "hole")
	c, err := Open(Config{ReadEnv: true, CacheDir: cacheDir(t), CloseTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("never uploaded")
	if _, err := c.PutBytes(context.Background(), id("x"), outputID(body), body); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Close()
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "1 uploads") {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if _, err := c.Get(context.Background(), id("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// Credentials never show when a Config is printed.
func TestConfigStringMasksSecrets(t *testing.T) {
	c := Config{AWSAccessKeyID: "AKIAEXAMPLE", AWSSecretAccessKey: "s3cr3t", AWSSessionToken: "sessiontokenvalue", S3Bucket: "b"}
	for _, s := range []string{c.String(), fmt.Sprint(c), fmt.Sprintf("%+v %#v", c, c)} {
		if strings.Contains(s, "AKIAEXAMPLE") || strings.Contains(s, "s3cr3t") || strings.Contains(s, "sessiontokenvalue") || !strings.Contains(s, "b") {
			t.Fatalf("printed: %s", s)
		}
	}
}
