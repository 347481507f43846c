module github.com/gobuildcache/gobuildcache/examples/go

go 1.24

require github.com/gobuildcache/gobuildcache/go v0.0.0

replace github.com/gobuildcache/gobuildcache/go => ../../go
