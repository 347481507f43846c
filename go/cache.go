package gobuildcache

// #include <stdlib.h>
// #include <gobuildcache.h>
import "C"

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// IDLen is the length in bytes of an ActionID or OutputID.
const IDLen = C.GBC_ID_LEN

// Cache is an open build cache backed by the Rust library. It is safe for
// concurrent use by many goroutines. Close it when done; a finalizer closes it
// if it is garbage collected first.
type Cache struct {
	// mu guards p: methods hold it for reading during their C call, Close
	// holds it for writing while it frees the handle, so a handle is never
	// freed while in use.
	mu sync.RWMutex
	p  *C.gbc_cache
}

// Entry is a cached output.
type Entry struct {
	// OutputID is the SHA-256 of the body.
	OutputID []byte
	// Size is the body size in bytes.
	Size int64
	// Time is when the entry was first put.
	Time time.Time
	// DiskPath is the absolute path of a file holding exactly the body. It
	// stays valid until the Cache is closed; never write to it.
	DiskPath string
}

// Open opens (creating if needed) the cache described by cfg.
func Open(cfg Config) (*Cache, error) {
	js, err := cfg.configJSON()
	if err != nil {
		return nil, err
	}
	cjs := C.CString(js)
	defer C.free(unsafe.Pointer(cjs))
	var flags C.uint32_t
	if cfg.ReadEnv {
		flags |= C.GBC_OPEN_READ_ENV
	}
	var p *C.gbc_cache
	if err := call(func() C.gbc_result { return C.gbc_cache_open(cjs, flags, &p) }); err != nil {
		return nil, err
	}
	c := &Cache{p: p}
	runtime.SetFinalizer(c, func(c *Cache) { _ = c.Close() })
	return c, nil
}

// ptr returns the C handle; the caller holds c.mu for reading and has checked
// it is not nil.
func (c *Cache) ptr() *C.gbc_cache {
	maybeGC()
	return c.p
}

// Close first waits, for at most Config.CloseTimeout, for pending uploads to
// the remote store (as Flush does), then closes the cache and releases its
// handle. DiskPaths it returned may be removed from now on. An error matching
// ErrIncomplete says how many uploads could not be done in time (those
// entries stay local); the cache is closed all the same. Calling Close again
// is a no-op; any other method returns ErrClosed afterwards. Close waits for
// calls in progress (including a running Serve) to return.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p == nil {
		return nil
	}
	runtime.SetFinalizer(c, nil)
	p := c.p
	err := call(func() C.gbc_result { return C.gbc_cache_close(p) })
	C.gbc_cache_free(p)
	c.p = nil
	return err
}

// Flush waits, for at most Config.CloseTimeout, until everything put so far
// has been uploaded to the remote store, and leaves the cache open. An error
// matching ErrIncomplete says how many uploads could not be done in time.
// Without a remote it returns nil at once.
func (c *Cache) Flush() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.p == nil {
		return ErrClosed
	}
	p := c.ptr()
	err := call(func() C.gbc_result { return C.gbc_cache_flush(p, nil) })
	runtime.KeepAlive(c)
	return err
}

// Get looks up an action. A miss returns ErrNotFound; a damaged entry or an
// unreachable remote is a miss too, never an error.
func (c *Cache) Get(ctx context.Context, actionID []byte) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.p == nil {
		return Entry{}, ErrClosed
	}
	var e C.gbc_entry
	p := c.ptr()
	err := call(func() C.gbc_result {
		return C.gbc_cache_get(p, bytesPtr(actionID), C.size_t(len(actionID)), &e)
	})
	runtime.KeepAlive(c)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Entry{}, ErrNotFound
		}
		return Entry{}, err
	}
	return takeEntry(&e), nil
}

// PutBytes stores body under actionID; outputID must be its SHA-256.
func (c *Cache) PutBytes(ctx context.Context, actionID, outputID, body []byte) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.p == nil {
		return Entry{}, ErrClosed
	}
	var e C.gbc_entry
	p := c.ptr()
	err := call(func() C.gbc_result {
		return C.gbc_cache_put_bytes(p,
			bytesPtr(actionID), C.size_t(len(actionID)),
			bytesPtr(outputID), C.size_t(len(outputID)),
			bytesPtr(body), C.size_t(len(body)), &e)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(body)
	if err != nil {
		return Entry{}, err
	}
	return takeEntry(&e), nil
}

// Put stores what r yields, up to EOF, under actionID; outputID must be the
// SHA-256 of those bytes (ErrIntegrity otherwise, and nothing is stored).
//
// The body is streamed, never held in memory: an *os.File is read by the
// library directly (from its current offset; note that this switches the file
// to blocking mode, as (*os.File).Fd does), any other reader through a pipe.
// Cancelling ctx abandons the put.
func (c *Cache) Put(ctx context.Context, actionID, outputID []byte, r io.Reader) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	if f, ok := r.(*os.File); ok {
		return c.putFd(actionID, outputID, f)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return Entry{}, err
	}
	defer pr.Close()
	copyErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(pw, r)
		// Report before closing: the library sees EOF only after the close,
		// so once Put returns from C the reader's error is already here.
		copyErr <- err
		pw.Close()
	}()
	// On cancel the library sees a short body: its hash check then fails
	// and nothing is stored.
	stop := context.AfterFunc(ctx, func() { pw.Close() })
	defer stop()

	e, err := c.putFd(actionID, outputID, pr)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return Entry{}, cerr
		}
		select {
		case rerr := <-copyErr:
			if rerr != nil {
				return Entry{}, fmt.Errorf("gobuildcache: reading put body: %w", rerr)
			}
		default:
			// The library gave up before EOF; closing pr (deferred) stops
			// the copy once r yields again.
		}
		return Entry{}, err
	}
	return e, nil
}

func (c *Cache) putFd(actionID, outputID []byte, f *os.File) (Entry, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.p == nil {
		return Entry{}, ErrClosed
	}
	fd := C.int(f.Fd()) // Fd also makes the descriptor blocking, which the library needs
	var e C.gbc_entry
	p := c.ptr()
	err := call(func() C.gbc_result {
		return C.gbc_cache_put_fd(p,
			bytesPtr(actionID), C.size_t(len(actionID)),
			bytesPtr(outputID), C.size_t(len(outputID)),
			fd, -1, &e)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(f) // its finalizer would close fd
	if err != nil {
		return Entry{}, err
	}
	return takeEntry(&e), nil
}

// takeEntry copies a C entry into Go memory and frees its path.
func takeEntry(e *C.gbc_entry) Entry {
	out := Entry{
		OutputID: C.GoBytes(unsafe.Pointer(&e.output_id[0]), IDLen),
		Size:     int64(e.size),
		Time:     time.Unix(0, int64(e.time_unix_nanos)),
		DiskPath: C.GoString(e.path),
	}
	C.gbc_string_free(e.path)
	return out
}

// Stats is a snapshot of the cache's counters, as `-stats-json` writes them.
type Stats struct {
	Gets           uint64 `json:"gets"`
	Hits           uint64 `json:"hits"`
	Misses         uint64 `json:"misses"`
	Puts           uint64 `json:"puts"`
	PutErrors      uint64 `json:"put_errors"`
	GetErrors      uint64 `json:"get_errors"`
	BytesIn        uint64 `json:"bytes_in"`
	BytesOut       uint64 `json:"bytes_out"`
	CorruptDropped uint64 `json:"corrupt_dropped"`
	ProtocolErrors uint64 `json:"protocol_errors"`
	LocalHits      uint64 `json:"local_hits"`
	RemoteHits     uint64 `json:"remote_hits"`
	RemoteMisses   uint64 `json:"remote_misses"`
	// RemoteAbsent counts remote misses known from the start-up listing of a
	// small remote, without asking it.
	RemoteAbsent uint64 `json:"remote_absent"`
	// RemoteErrors counts failed remote calls (timeouts, errors, breaker
	// open); each was answered as a miss.
	RemoteErrors  uint64 `json:"remote_errors"`
	RemoteCorrupt uint64 `json:"remote_corrupt"`
	BytesDown     uint64 `json:"bytes_down"`
	BytesUp       uint64 `json:"bytes_up"`
	Uploads       uint64 `json:"uploads"`
	// UploadsExisting counts uploads skipped because the object was there.
	UploadsExisting uint64 `json:"uploads_existing"`
	UploadFailures  uint64 `json:"upload_failures"`
	// UploadsDropped counts uploads not queued because the queue was full.
	UploadsDropped uint64 `json:"uploads_dropped"`
	UploadsSkipped uint64 `json:"uploads_skipped"`
	// UploadsNotDone counts uploads still pending at close's deadline.
	UploadsNotDone       uint64 `json:"uploads_not_done"`
	UploadQueueHighWater uint64 `json:"upload_queue_high_water"`
	BreakerTrips         uint64 `json:"breaker_trips"`
	// RemoteDownloads counts objects fetched into the local tier (gets and
	// the warm-start prefetch).
	RemoteDownloads uint64 `json:"remote_downloads"`
	// Warm start: entries in the manifest found at start-up, manifests
	// rejected as damaged or oversized, entries this run published.
	ManifestEntries   uint64 `json:"manifest_entries"`
	ManifestRejected  uint64 `json:"manifest_rejected"`
	ManifestPublished uint64 `json:"manifest_published"`
	// Prefetch: entries fetched, already local, gone from the remote; remote
	// hits that waited for a prefetch (joined) or found it done (hits).
	PrefetchFetched uint64 `json:"prefetch_fetched"`
	PrefetchLocal   uint64 `json:"prefetch_local"`
	PrefetchMissing uint64 `json:"prefetch_missing"`
	PrefetchJoined  uint64 `json:"prefetch_joined"`
	PrefetchHits    uint64 `json:"prefetch_hits"`
	// Packs: prefetched entries that came in warm-start packs (streamed
	// objects), and entries in the packs this run published.
	PackEntries   uint64 `json:"pack_entries"`
	PackPublished uint64 `json:"pack_published"`
	// Slow remote: times it was judged too slow to pay, times a probe found
	// it fast again, and gets answered locally meanwhile (each a miss).
	SlowVerdicts uint64 `json:"slow_verdicts"`
	SlowResumes  uint64 `json:"slow_resumes"`
	SlowSkipped  uint64 `json:"slow_skipped"`
	// CloseUs is how long a go command's close took to answer (0 outside
	// a GOCACHEPROG session).
	CloseUs      uint64    `json:"close_us"`
	GetLatency   Quantiles `json:"get_latency"`
	PutLatency   Quantiles `json:"put_latency"`
	PeakRSSBytes uint64    `json:"peak_rss_bytes"`
	// CPUUs is the CPU time (user + system) the cache's process used so far.
	CPUUs uint64 `json:"cpu_us"`
	// CPUSystemUs is the kernel's part of CPUUs (files, renames, sockets).
	CPUSystemUs uint64 `json:"cpu_system_us"`
}

// Quantiles are latencies in microseconds.
type Quantiles struct {
	Count uint64 `json:"count"`
	P50   uint64 `json:"p50_us"`
	P90   uint64 `json:"p90_us"`
	P99   uint64 `json:"p99_us"`
	Max   uint64 `json:"max_us"`
	// Total is all of them added up: what the caller waited in all.
	Total uint64 `json:"total_us"`
}

// Stats returns the cache's statistics so far.
func (c *Cache) Stats() (Stats, error) {
	js, err := c.StatsJSON()
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	if err := json.Unmarshal(js, &s); err != nil {
		return Stats{}, fmt.Errorf("gobuildcache: decoding stats: %w", err)
	}
	return s, nil
}

// StatsJSON returns the statistics as the library renders them, including any
// field the Stats struct does not know yet.
func (c *Cache) StatsJSON() ([]byte, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.p == nil {
		return nil, ErrClosed
	}
	var s *C.char
	p := c.ptr()
	err := call(func() C.gbc_result { return C.gbc_cache_stats_json(p, &s) })
	runtime.KeepAlive(c)
	if err != nil {
		return nil, err
	}
	defer C.gbc_string_free(s)
	return []byte(C.GoString(s)), nil
}

// ClearLocal removes every entry of the local tier. DiskPaths returned
// earlier become invalid.
func (c *Cache) ClearLocal() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.p == nil {
		return ErrClosed
	}
	p := c.ptr()
	err := call(func() C.gbc_result { return C.gbc_cache_clear_local(p) })
	runtime.KeepAlive(c)
	return err
}
