package gobuildcache

// #include <gobuildcache.h>
import "C"

import (
	"fmt"
	"io"
	"os"
	"runtime"
)

// Serve answers one GOCACHEPROG session: requests from r, responses to w,
// until the go command sends "close" (answered after the Stats/StatsJSON
// report of the Config) or r ends. A program that calls
// Serve(os.Stdin, os.Stdout) and exits is a complete GOCACHEPROG helper backed
// by this cache.
//
// An *os.File is used by the library directly (switched to blocking mode, as
// (*os.File).Fd does); any other reader or writer goes through a pipe and a
// copying goroutine. If r is not a file and never ends, the goroutine reading
// it stays blocked in r.Read after Serve returns, until r yields or fails.
//
// A non-nil error means the stream could not be trusted any more
// (ErrProtocol, ErrIO): a helper should exit non-zero so the go command fails
// at once. Serve holds the cache open: Close waits for it to return.
func (c *Cache) Serve(r io.Reader, w io.Writer) error {
	in, finishIn, err := readerFile(r)
	if err != nil {
		return err
	}
	out, finishOut, err := writerFile(w)
	if err != nil {
		finishIn()
		return err
	}
	err = c.serveFiles(in, out)
	// Flush responses to w before anything else: the last one answers close.
	if werr := finishOut(); err == nil && werr != nil {
		err = fmt.Errorf("gobuildcache: writing responses: %w", werr)
	}
	if rerr := finishIn(); err == nil && rerr != nil {
		err = fmt.Errorf("gobuildcache: reading requests: %w", rerr)
	}
	return err
}

func (c *Cache) serveFiles(in, out *os.File) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.p == nil {
		return ErrClosed
	}
	inFd, outFd := C.int(in.Fd()), C.int(out.Fd())
	var end C.gbc_serve_end
	p := c.ptr()
	err := call(func() C.gbc_result { return C.gbc_cache_serve_fds(p, inFd, outFd, &end) })
	runtime.KeepAlive(c)
	runtime.KeepAlive(in)
	runtime.KeepAlive(out)
	return err
}

// readerFile gives a file to read r from: r itself, or the read end of a pipe
// fed by a goroutine. finish closes the pipe, which makes that goroutine's
// next write fail so it ends, and returns r's read error if it had one.
func readerFile(r io.Reader) (f *os.File, finish func() error, err error) {
	if f, ok := r.(*os.File); ok {
		return f, func() error { return nil }, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	copyErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(pw, r)
		copyErr <- err // before Close: the library sees EOF only after it
		pw.Close()
	}()
	return pr, func() error {
		pr.Close()
		select {
		case err := <-copyErr:
			return err
		default: // still blocked in r.Read: it ends when r does
			return nil
		}
	}, nil
}

// writerFile gives a file to write w through: w itself, or the write end of a
// pipe drained into w by a goroutine. finish closes our write end (the library
// closed its own copy when it returned) and waits until w has everything.
func writerFile(w io.Writer) (f *os.File, finish func() error, err error) {
	if f, ok := w.(*os.File); ok {
		return f, func() error { return nil }, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, pr)
		pr.Close()
		done <- err
	}()
	return pw, func() error {
		pw.Close()
		return <-done
	}, nil
}
