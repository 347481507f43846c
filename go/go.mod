module github.com/gobuildcache/gobuildcache/go

go 1.24
