package gobuildcache

import (
	"encoding/json"
	"fmt"
	"time"
)

// Config selects and tunes a cache. The zero value means the defaults: the
// local disk tier only, in the user cache directory. Each field is the
// gobuildcache flag of the same name (see `gobuildcache help`); a zero field
// is left at its default.
type Config struct {
	// ReadEnv also reads the GOBUILDCACHE_* (then unprefixed) environment
	// variables, as the gobuildcache binary does; fields set here win.
	ReadEnv bool `json:"-"`

	Backend   string `json:"backend,omitempty"` // "disk" (default), "s3", "gcs", "azure" or "http"
	CacheDir  string `json:"cache-dir,omitempty"`
	LockDir   string `json:"lock-dir,omitempty"`
	LockType  string `json:"lock-type,omitempty"` // "fslock", "memory" or "noop"
	S3Bucket  string `json:"s3-bucket,omitempty"`
	S3Prefix  string `json:"s3-prefix,omitempty"`
	GCSBucket string `json:"gcs-bucket,omitempty"`
	GCSPrefix string `json:"gcs-prefix,omitempty"`
	// AzureContainer and AzurePrefix select the Azure Blob Storage container
	// and blob name prefix of -backend azure.
	AzureContainer string `json:"azure-container,omitempty"`
	AzurePrefix    string `json:"azure-prefix,omitempty"`
	// AzureStorageAccount and AzureStorageEndpoint name the account and, for
	// an emulator or another cloud, the blob service URL. Credentials (a
	// connection string or SAS token) go in Extra under
	// "azure-storage-connection-string" or "azure-storage-sas-token", or come
	// from the Entra ID chain.
	AzureStorageAccount  string `json:"azure-storage-account,omitempty"`
	AzureStorageEndpoint string `json:"azure-storage-endpoint,omitempty"`
	// HTTPURL is the base URL of -backend http (a WebDAV or plain HTTP
	// server); HTTPPrefix the key prefix under it. Credentials go in Extra
	// ("http-token", or "http-username" and "http-password").
	HTTPURL    string `json:"http-url,omitempty"`
	HTTPPrefix string `json:"http-prefix,omitempty"`
	Debug      bool   `json:"debug,omitempty"`
	// Stats prints a summary to stderr when a Serve session is closed
	// (default true); use Bool(false) to turn it off.
	Stats *bool `json:"stats,omitempty"`
	// StatsJSON is a file the statistics are written to when a Serve session
	// is closed.
	StatsJSON    string  `json:"stats-json,omitempty"`
	Compression  *bool   `json:"compression,omitempty"`   // default true
	AsyncBackend *bool   `json:"async-backend,omitempty"` // default true
	ReadOnly     bool    `json:"read-only,omitempty"`
	ErrorRate    float64 `json:"error-rate,omitempty"`
	// MaxSize caps the local tier, e.g. "10GiB" (the default) or "500MB".
	MaxSize string `json:"max-size,omitempty"`
	// CloseTimeout bounds how long closing waits for pending uploads.
	CloseTimeout time.Duration `json:"-"`

	// Extra holds settings by flag name, for keys this struct has no field
	// for and for values a zero field cannot express (an empty "s3-prefix").
	// They are applied after the fields.
	Extra map[string]string `json:"-"`
}

// Bool returns a pointer to v, for the *bool fields of Config.
func Bool(v bool) *bool { return &v }

// configJSON renders c as the JSON object the C ABI takes.
func (c Config) configJSON() (string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return "", err
	}
	if c.CloseTimeout < 0 {
		return "", fmt.Errorf("gobuildcache: negative CloseTimeout %v", c.CloseTimeout)
	}
	if c.CloseTimeout > 0 {
		m["close-timeout"] = fmt.Sprintf("%dms", c.CloseTimeout.Milliseconds())
	}
	for k, v := range c.Extra {
		m[k] = v
	}
	b, err = json.Marshal(m)
	return string(b), err
}
