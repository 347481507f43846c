//go:build debug

package gobuildcache

import "runtime"

// Under the debug tag every ptr() collects garbage, so a Cache that is only
// reachable through its C pointer is finalized mid-call and a missing
// runtime.KeepAlive shows up as a crash in tests (run with GOGC=1).
func maybeGC() { runtime.GC() }
