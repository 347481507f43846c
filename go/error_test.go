package gobuildcache

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorIsMatchesCodes(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &Error{Code: CodeClosed, Msg: "some message"})
	if !errors.Is(err, ErrClosed) {
		t.Fatal("errors.Is by code through a wrap")
	}
	if errors.Is(err, ErrNotFound) {
		t.Fatal("different codes must not match")
	}
	if (&Error{Code: CodeIO}).Error() != "gobuildcache: i/o" {
		t.Fatal((&Error{Code: CodeIO}).Error())
	}
	if Code(99).String() != "code 99" {
		t.Fatal(Code(99).String())
	}
}

func TestConfigJSONUsesFlagNames(t *testing.T) {
	js, err := Config{
		CacheDir:     "/c",
		Stats:        Bool(false),
		MaxSize:      "1GiB",
		ReadEnv:      true,
		CloseTimeout: 1500_000_000,
		Extra:        map[string]string{"s3-prefix": ""},
	}.configJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"cache-dir":"/c","close-timeout":"1500ms","max-size":"1GiB","s3-prefix":"","stats":false}`
	if js != want {
		t.Fatalf("got  %s\nwant %s", js, want)
	}
	js, err = Config{
		Backend:        "azure",
		AzureContainer: "ci",
		AzurePrefix:    "go/",
		HTTPURL:        "https://cache.lan/dav/",
		Extra:          map[string]string{"azure-storage-sas-token": "sv=x"},
	}.configJSON()
	if err != nil {
		t.Fatal(err)
	}
	want = `{"azure-container":"ci","azure-prefix":"go/","azure-storage-sas-token":"sv=x","backend":"azure","http-url":"https://cache.lan/dav/"}`
	if js != want {
		t.Fatalf("got  %s\nwant %s", js, want)
	}
	if js, _ := (Config{}).configJSON(); js != "{}" {
		t.Fatalf("zero Config: %s", js)
	}
}
