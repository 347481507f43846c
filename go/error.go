package gobuildcache

import "fmt"

// Code is a result code of the C ABI (gbc_result in gobuildcache.h). The
// numbers never change.
type Code uint32

// The codes an *Error can carry.
const (
	CodeInvalidArgument Code = 1
	CodePanic           Code = 2
	CodeNotFound        Code = 3
	CodeClosed          Code = 4
	CodeIO              Code = 5
	CodeProtocol        Code = 6
	CodeInvalidID       Code = 7
	CodeConfig          Code = 8
	CodeIntegrity       Code = 9
	CodeBackend         Code = 10
	CodeIncomplete      Code = 11
)

var codeNames = map[Code]string{
	CodeInvalidArgument: "invalid argument",
	CodePanic:           "panic",
	CodeNotFound:        "not found",
	CodeClosed:          "closed",
	CodeIO:              "i/o",
	CodeProtocol:        "protocol",
	CodeInvalidID:       "invalid id",
	CodeConfig:          "config",
	CodeIntegrity:       "integrity",
	CodeBackend:         "backend",
	CodeIncomplete:      "incomplete",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code %d", uint32(c))
}

// Error is a failure reported by the library: a code to branch on and a
// message for people.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return "gobuildcache: " + e.Code.String()
	}
	return "gobuildcache: " + e.Msg
}

// Is reports whether target is an *Error with the same code, so
// errors.Is(err, ErrNotFound) works whatever the message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is; each matches any *Error with its code.
var (
	// ErrNotFound: Get found no entry. A miss, not a failure.
	ErrNotFound = &Error{Code: CodeNotFound, Msg: "not found"}
	// ErrClosed: the Cache was closed.
	ErrClosed = &Error{Code: CodeClosed, Msg: "the cache is closed"}
	// ErrInvalidArgument: an argument the C ABI refused (e.g. an unusable file).
	ErrInvalidArgument = &Error{Code: CodeInvalidArgument}
	// ErrInvalidID: an ActionID or OutputID that is not 32 bytes.
	ErrInvalidID = &Error{Code: CodeInvalidID}
	// ErrConfig: a bad Config, environment value or cache directory.
	ErrConfig = &Error{Code: CodeConfig}
	// ErrIntegrity: a body whose SHA-256 or size is not what was given.
	ErrIntegrity = &Error{Code: CodeIntegrity}
	// ErrIO: a file-system or stream error.
	ErrIO = &Error{Code: CodeIO}
	// ErrProtocol: the GOCACHEPROG peer broke the protocol.
	ErrProtocol = &Error{Code: CodeProtocol}
	// ErrBackend: the remote store failed in a way that is not a miss.
	ErrBackend = &Error{Code: CodeBackend}
	// ErrIncomplete: Flush or Close could not finish every upload within
	// CloseTimeout; the message says how many, and those entries stay local.
	// Close has closed the cache all the same.
	ErrIncomplete = &Error{Code: CodeIncomplete}
	// ErrPanic: the library caught a panic of its own.
	ErrPanic = &Error{Code: CodePanic}
)
