// Command artifact caches any CI artifact in the gobuildcache cache, keyed by
// a string: the same local tier (and remote store, when GOBUILDCACHE_BACKEND
// is set) that serves the go command.
//
//	artifact -key "lint report for $COMMIT" -put report.txt
//	artifact -key "lint report for $COMMIT" -get   # prints the cached file's path; exit 1 on a miss
//
// The printed path is the cache's own file: copy it, since a later trim may
// remove it. Configured by the GOBUILDCACHE_* environment, like the helper. Build it
// after `cargo build --release -p gobuildcache-ffi` at the repository root.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	gobuildcache "github.com/gobuildcache/gobuildcache/go"
)

func main() {
	key := flag.String("key", "", "what the artifact is (hashed into the ActionID)")
	put := flag.String("put", "", "store this file under the key")
	get := flag.Bool("get", false, "print the path of the cached file for the key")
	stats := flag.Bool("stats", false, "print the cache statistics as JSON at the end")
	flag.Parse()
	if *key == "" || (*put == "") == !*get {
		fmt.Fprintln(os.Stderr, "usage: artifact -key KEY (-put FILE | -get) [-stats]")
		os.Exit(2)
	}
	code, err := run(*key, *put, *stats)
	if err != nil {
		fmt.Fprintln(os.Stderr, "artifact:", err)
	}
	os.Exit(code)
}

func run(key, put string, stats bool) (int, error) {
	c, err := gobuildcache.Open(gobuildcache.Config{ReadEnv: true, Stats: gobuildcache.Bool(false)})
	if err != nil {
		return 2, err
	}
	defer c.Close()
	ctx := context.Background()
	// A namespace keeps artifact keys apart from the go command's ActionIDs.
	action := sha256.Sum256([]byte("artifact example v1\x00" + key))

	code := 0
	if put != "" {
		f, err := os.Open(put)
		if err != nil {
			return 2, err
		}
		defer f.Close()
		// The OutputID is the body's SHA-256: hash first, then stream the
		// file from the start (Put reads an *os.File directly).
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return 2, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 2, err
		}
		e, err := c.Put(ctx, action[:], h.Sum(nil), f)
		if err != nil {
			return 2, err
		}
		fmt.Printf("stored %d bytes, output %s\n", e.Size, hex.EncodeToString(e.OutputID))
	} else {
		e, err := c.Get(ctx, action[:])
		switch {
		case errors.Is(err, gobuildcache.ErrNotFound):
			fmt.Println("miss")
			code = 1
		case err != nil:
			return 2, err
		default:
			fmt.Println(e.DiskPath)
		}
	}
	if stats {
		js, err := c.StatsJSON()
		if err != nil {
			return 2, err
		}
		fmt.Println(string(js))
	}
	return code, nil
}
