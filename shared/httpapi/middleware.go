package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
)

// RequestIDHeader carries the request id on every response. A well-formed
// incoming value (from a proxy) is kept; otherwise a new one is made.
const RequestIDHeader = "X-Request-Id"

type ctxKey int

const (
	loggerKey ctxKey = iota
	requestIDKey
)

// LoggerFrom returns the request-scoped logger (with the request id), or
// the default logger outside a request.
func LoggerFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// RequestID returns the request's id, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// Wrap applies the middleware every route shares: request id, body cap of
// MaxBodyBytes, panic recovery (500 "internal error", detail only in the
// log) and one structured access-log line per request.
func Wrap(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		reqLog := log.With("request_id", id)
		ctx := context.WithValue(context.WithValue(r.Context(), requestIDKey, id), loggerKey, reqLog)
		r = r.WithContext(ctx)
		w.Header().Set(RequestIDHeader, id)
		rec := &recorder{ResponseWriter: w}
		r.Body = http.MaxBytesReader(rec, r.Body, MaxBodyBytes)

		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				reqLog.Error("panic in handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !rec.wroteHeader {
					WriteError(rec, r, apperr.New(apperr.Internal, "internal error"))
				}
			}
			reqLog.Info("request",
				"method", r.Method, "path", r.URL.Path, "status", rec.status(),
				"bytes", rec.bytes, "duration_ms", float64(time.Since(start).Microseconds())/1000,
				"remote", r.RemoteAddr)
		}()
		if r.ContentLength > MaxBodyBytes {
			WriteError(rec, r, apperr.New(apperr.TooLarge, "request body is larger than %d bytes", MaxBodyBytes))
			return
		}
		h.ServeHTTP(rec, r)
	})
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// recorder remembers the status and size for the access log.
type recorder struct {
	http.ResponseWriter
	code        int
	bytes       int
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
