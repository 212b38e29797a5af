// Package apperr is the application error model: an error carries a code
// that says what kind of failure it is and a message written for people.
// Domain services return *Error; the HTTP edge maps each code to a status
// in one table (httpapi) and each dialect to its own numbering. Any other
// error is internal: logged with its detail, shown to clients only as
// "internal error".
package apperr

import (
	"errors"
	"fmt"
)

// Code classifies an application error.
type Code string

const (
	Invalid Code = "EINVALID"
	// BadJSON is a request body that is not the JSON the route expects.
	BadJSON          Code = "EJSON"
	NotFound         Code = "ENOTFOUND"
	Conflict         Code = "ECONFLICT"
	Unauthorized     Code = "EUNAUTHORIZED"
	Forbidden        Code = "EFORBIDDEN"
	RateLimit        Code = "ERATELIMIT"
	TooLarge         Code = "ETOOLARGE"
	MethodNotAllowed Code = "EMETHOD"
	Unavailable      Code = "EUNAVAILABLE"
	Internal         Code = "EINTERNAL"
)

// Error is an application error. Message is safe to show to the caller.
type Error struct {
	Code    Code
	Message string
	// Field names the offending input, when there is one.
	Field string
	// Key is an optional stable machine-readable reason for a client
	// that branches on more than the code (e.g. "EXPORT_FORBIDDEN",
	// "NOT_ISSUED"); the cert-ctrl envelope sends it as error.key.
	Key string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// New returns an error with a formatted message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithKey sets the error's Key and returns the error.
func (e *Error) WithKey(key string) *Error {
	e.Key = key
	return e
}

// KeyOf returns the Key of the first *Error in err's chain, or "".
func KeyOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Key
	}
	return ""
}

// InvalidField reports bad input in one named field.
func InvalidField(field, format string, args ...any) *Error {
	return &Error{Code: Invalid, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of the first *Error in err's chain, Internal for
// any other non-nil error, and "" for nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// MessageOf returns the message that may be shown for err: the *Error's
// message, or "internal error" for anything else.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
