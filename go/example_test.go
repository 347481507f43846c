package gobuildcache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	gobuildcache "github.com/gobuildcache/gobuildcache/go"
)

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "gobuildcache-example")
	defer os.RemoveAll(dir)
	c, err := gobuildcache.Open(gobuildcache.Config{CacheDir: dir, Stats: gobuildcache.Bool(false)})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	s, _ := c.Stats()
	fmt.Println("gets so far:", s.Gets)
	// Output: gets so far: 0
}

func ExampleCache_Put() {
	dir, _ := os.MkdirTemp("", "gobuildcache-example")
	defer os.RemoveAll(dir)
	c, err := gobuildcache.Open(gobuildcache.Config{CacheDir: dir, Stats: gobuildcache.Bool(false)})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	action := sha256.Sum256([]byte("inputs of some build action"))
	body := "the action's output"
	output := sha256.Sum256([]byte(body)) // the OutputID is the body's SHA-256
	e, err := c.Put(ctx, action[:], output[:], strings.NewReader(body))
	if err != nil {
		log.Fatal(err)
	}
	stored, _ := os.ReadFile(e.DiskPath)
	fmt.Println(e.Size, string(stored))
	// Output: 19 the action's output
}

func ExampleCache_Get() {
	dir, _ := os.MkdirTemp("", "gobuildcache-example")
	defer os.RemoveAll(dir)
	c, err := gobuildcache.Open(gobuildcache.Config{CacheDir: dir, Stats: gobuildcache.Bool(false)})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	action := sha256.Sum256([]byte("inputs"))
	if _, err := c.Get(ctx, action[:]); errors.Is(err, gobuildcache.ErrNotFound) {
		fmt.Println("miss")
	}
	body := []byte("output")
	output := sha256.Sum256(body)
	if _, err := c.PutBytes(ctx, action[:], output[:], body); err != nil {
		log.Fatal(err)
	}
	e, err := c.Get(ctx, action[:])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("hit:", bytes.Equal(e.OutputID, output[:]), e.Size)
	// Output:
	// miss
	// hit: true 6
}

func ExampleCache_Close() {
	dir, _ := os.MkdirTemp("", "gobuildcache-example")
	defer os.RemoveAll(dir)
	c, err := gobuildcache.Open(gobuildcache.Config{CacheDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	c.Close()
	c.Close() // a no-op
	_, err = c.Stats()
	fmt.Println(errors.Is(err, gobuildcache.ErrClosed))
	// Output: true
}

// A complete GOCACHEPROG helper: build it, then run the go command with
// GOCACHEPROG=/path/to/it. The GOBUILDCACHE_* environment configures it.
func ExampleCache_Serve() {
	c, err := gobuildcache.Open(gobuildcache.Config{ReadEnv: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	err = c.Serve(os.Stdin, os.Stdout)
	c.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
