// Command gobuildcache-go is a GOCACHEPROG helper written in Go on top of the
// gobuildcache package: the same cache as the gobuildcache binary, configured
// by the same GOBUILDCACHE_* environment variables.
//
//	go build -o gobuildcache-go ./cmd/gobuildcache-go
//	GOCACHEPROG=$PWD/gobuildcache-go go build ./...
package main

import (
	"fmt"
	"os"

	gobuildcache "github.com/gobuildcache/gobuildcache/go"
)

func main() {
	c, err := gobuildcache.Open(gobuildcache.Config{ReadEnv: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "gobuildcache-go:", err)
		os.Exit(2)
	}
	err = c.Serve(os.Stdin, os.Stdout)
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gobuildcache-go:", err)
		os.Exit(1)
	}
}
