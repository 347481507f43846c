package gobuildcache

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Config selects and tunes a cache. The zero value means the defaults: the
// local disk tier only, in the user cache directory. Each field is the
// gobuildcache setting named in its json tag (see `gobuildcache help` and the
// README's configuration table); a zero field is left at its default. The
// library's tests fail when a setting has no field here.
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
	// an emulator or another cloud, the blob service URL. Credentials: a
	// connection string or a SAS token, else the Entra ID chain. They are
	// never printed (see String).
	AzureStorageAccount          string `json:"azure-storage-account,omitempty"`
	AzureStorageEndpoint         string `json:"azure-storage-endpoint,omitempty"`
	AzureStorageConnectionString string `json:"azure-storage-connection-string,omitempty"`
	AzureStorageSASToken         string `json:"azure-storage-sas-token,omitempty"`
	// HTTPURL is the base URL of -backend http (a WebDAV or plain HTTP
	// server); HTTPPrefix the key prefix under it. Credentials: a bearer
	// token, or a user name and password (basic auth); never printed.
	HTTPURL      string `json:"http-url,omitempty"`
	HTTPPrefix   string `json:"http-prefix,omitempty"`
	HTTPToken    string `json:"http-token,omitempty"`
	HTTPUsername string `json:"http-username,omitempty"`
	HTTPPassword string `json:"http-password,omitempty"`
	Debug        bool   `json:"debug,omitempty"`
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
	// CloseTimeout bounds how long Flush and Close wait for pending uploads
	// (default 30s).
	CloseTimeout time.Duration `json:"-"`
	// RemoteDir, with Backend "disk", is a directory shared as the remote
	// tier (an NFS mount, say).
	RemoteDir string `json:"remote-dir,omitempty"`

	// Warm start. Prefetch (default true) fetches what recent runs used at
	// open; Publish makes Close publish this run's manifest (default: only
	// when the cache served a go command through Serve).
	Prefetch            *bool    `json:"prefetch,omitempty"`
	Publish             *bool    `json:"publish,omitempty"`
	ManifestKey         string   `json:"manifest-key,omitempty"`
	ManifestFallback    []string `json:"manifest-fallback,omitempty"`
	PrefetchConcurrency int      `json:"prefetch-concurrency,omitempty"` // default 32

	// S3 beyond bucket and prefix; unset fields are left to the AWS SDK's
	// default chain. The credentials are never printed (see String).
	AWSRegion          string `json:"aws-region,omitempty"`
	AWSAccessKeyID     string `json:"aws-access-key-id,omitempty"`
	AWSSecretAccessKey string `json:"aws-secret-access-key,omitempty"`
	AWSSessionToken    string `json:"aws-session-token,omitempty"`
	AWSEndpointURLS3   string `json:"aws-endpoint-url-s3,omitempty"` // MinIO, R2, Tigris, a test server
	AWSS3UsePathStyle  bool   `json:"aws-s3-use-path-style,omitempty"`

	// Extra holds settings by flag name, for keys this struct has no field
	// for and for values a zero field cannot express (an empty "s3-prefix").
	// They are applied after the fields.
	Extra map[string]string `json:"-"`
}

// String describes c with its credentials masked (and without Extra), so a
// Config can be logged.
func (c Config) String() string {
	for _, f := range []*string{&c.AWSAccessKeyID, &c.AWSSecretAccessKey, &c.AWSSessionToken,
		&c.AzureStorageConnectionString, &c.AzureStorageSASToken, &c.HTTPToken, &c.HTTPPassword} {
		if *f != "" {
			*f = "***"
		}
	}
	c.Extra = nil
	type plain Config // no String method: no recursion
	return fmt.Sprintf("%+v", plain(c))
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

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
	if len(c.ManifestFallback) > 0 {
		m["manifest-fallback"] = strings.Join(c.ManifestFallback, ",")
	}
	for k, v := range c.Extra {
		m[k] = v
	}
	b, err = json.Marshal(m)
	return string(b), err
}
