// Package testenv builds the real local parts that tests run on (a bbolt
// store, the local master key, the mail outbox, the identity services) and
// a small HTTP client for the cert-ctrl envelope, so each test package
// states only what it tests.
package testenv

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/keys"
	keyslocal "github.com/certfleet/certfleet/shared/keys/local"
	"github.com/certfleet/certfleet/shared/mail/outbox"
	"github.com/certfleet/certfleet/shared/queue"
	queuelocal "github.com/certfleet/certfleet/shared/queue/local"
	"github.com/certfleet/certfleet/shared/store"
	"github.com/certfleet/certfleet/shared/store/bolt"
)

// PublicURL is the base URL the parts are configured with.
const PublicURL = "http://localhost:8080"

// Parts are real local adapters in a test's temporary directory.
type Parts struct {
	Store store.Store
	// Queue is a durable local queue in its own bbolt file.
	Queue     *queuelocal.Queue
	Sealer    keys.Sealer
	Outbox    *outbox.Sender
	OutboxDir string
	Log       *slog.Logger
	Clock     *Clock
}

// New opens bbolt, creates a master key and an outbox under tb.TempDir();
// everything is closed when the test ends.
func New(tb testing.TB) *Parts {
	tb.Helper()
	dir := tb.TempDir()
	db, err := bolt.OpenDB(filepath.Join(dir, "certfleet.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	w, err := keyslocal.Open(filepath.Join(dir, "master.key"), true)
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	obDir := filepath.Join(dir, "outbox")
	ob, err := outbox.New(obDir, log)
	if err != nil {
		tb.Fatal(err)
	}
	qdb, err := bolt.OpenDB(filepath.Join(dir, "queue.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { qdb.Close() })
	q, err := queuelocal.New(qdb, "issuance", queuelocal.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return &Parts{Store: bolt.New(db), Queue: q, Sealer: keys.NewEnvelope(w), Outbox: ob, OutboxDir: obDir, Log: log, Clock: &Clock{}}
}

// RunQueued receives every message queued now and dispatches each to the
// handler for its kind, as the worker would, acknowledging successes; it
// fails the test on a kind without a handler or a handler error.
func (p *Parts) RunQueued(tb testing.TB, handlers map[string]func(context.Context, queue.Delivery) error) int {
	tb.Helper()
	n := 0
	for {
		ds, err := p.Queue.Receive(context.Background(), queue.MaxReceiveBatch, 0)
		if err != nil {
			tb.Fatal(err)
		}
		if len(ds) == 0 {
			return n
		}
		for _, d := range ds {
			h, ok := handlers[d.Kind]
			if !ok {
				tb.Fatalf("no handler for queued kind %q", d.Kind)
			}
			if err := h(context.Background(), d); err != nil {
				tb.Fatalf("step %s: %v", d.Kind, err)
			}
			if err := p.Queue.Ack(context.Background(), d); err != nil {
				tb.Fatal(err)
			}
			n++
		}
	}
}

// Identity is an identity service over the parts, with a cheap password
// hash and the parts' clock.
func (p *Parts) Identity() *identity.Service {
	return identity.New(p.Store, p.Sealer, p.Outbox, p.Log, identity.Config{
		PublicURL: PublicURL, HashMemoryKiB: 64, HashPasses: 1, Now: p.Clock.Now})
}

// Clock is real time plus an offset a test moves forward (the store
// expires items by real time, so a test clock never runs behind it).
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// Reply is a response in the cert-ctrl envelope.
type Reply struct {
	Status int
	Data   json.RawMessage
	Error  *httpapi.ErrorBody
	Header http.Header
	Body   string
}

// Cookie returns the value of the named cookie the response set, or "".
func (r Reply) Cookie(name string) string {
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == name && c.Value != "" {
			return c.Value
		}
	}
	return ""
}

// Client sends requests to a handler as one client address.
type Client struct {
	T       testing.TB
	Handler http.Handler
	// CookieName is the session cookie (cjj365 when empty).
	CookieName string
}

// Do sends a request; cred is a session cookie value, an "ak_..." API key
// or "cfw_..." worker token (sent as Bearer), or "". The body must be the envelope's JSON.
func (c Client) Do(method, path, body, cred string) Reply {
	c.T.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	req.RemoteAddr = "198.51.100.7:5555"
	switch {
	case strings.HasPrefix(cred, "ak_"), strings.HasPrefix(cred, "cfw_"):
		req.Header.Set("Authorization", "Bearer "+cred)
	case cred != "":
		name := c.CookieName
		if name == "" {
			name = "cjj365"
		}
		req.AddCookie(&http.Cookie{Name: name, Value: cred})
	}
	rec := httptest.NewRecorder()
	c.Handler.ServeHTTP(rec, req)
	r := Reply{Status: rec.Code, Header: rec.Header(), Body: rec.Body.String()}
	var env struct {
		Data  json.RawMessage
		Error *httpapi.ErrorBody
	}
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
			c.T.Fatalf("%s %s: not JSON: %s", method, path, rec.Body)
		}
	}
	r.Data, r.Error = env.Data, env.Error
	return r
}
