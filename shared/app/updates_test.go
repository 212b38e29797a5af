package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/store"
)

// updatesPoll is one answer to GET /apiv1/devices/self/updates.
type updatesPoll struct {
	Status int
	Header http.Header
	Body   string
	Data   *struct {
		Cursor  *string
		Signals []struct {
			Type *string
			TsMs *int64 `json:"ts_ms"`
			Ref  map[string]any
		}
	}
	Error *struct {
		Code   int
		Params map[string]any
	}
}

// polledSignal is one signal of a poll, its fields required.
type polledSignal struct {
	Type string
	Ref  map[string]any
}

// Signals returns the signals of a 200 poll (none for any other answer).
func (p updatesPoll) Signals() []polledSignal {
	if p.Data == nil {
		return nil
	}
	out := make([]polledSignal, 0, len(p.Data.Signals))
	for _, s := range p.Data.Signals {
		if s.Type != nil {
			out = append(out, polledSignal{Type: *s.Type, Ref: s.Ref})
		}
	}
	return out
}

// updatesGet polls as the agent does; inm, when set, is sent as
// If-None-Match.
func updatesGet(t testing.TB, base, query, token, inm string) updatesPoll {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/apiv1/devices/self/updates"+query, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if inm != "" {
		req.Header.Set("If-None-Match", inm)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	p := updatesPoll{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("not JSON: %s", b)
		}
	}
	return p
}

// updatesDevice registers a device with an API key over HTTP (protocol
// §1.3) and returns its id and session tokens.
func updatesDevice(t *testing.T, base, key string, n int) (id int64, access, refresh string) {
	t.Helper()
	pk := base64.StdEncoding.EncodeToString(make([]byte, 32))
	r := deviceClient{t: t, base: base}.do("POST", "/apiv1/me/devices", "bearer:"+key,
		map[string]any{"device_public_id": fmt.Sprintf("00000000-0000-0000-0000-%012d", n), "dev_pk": pk, "name": "poller"})
	if r.Status/100 != 2 {
		t.Fatalf("register: %d %+v", r.Status, r.Error)
	}
	if _, err := fmt.Sscan(r.str(t, "device", "id"), &id); err != nil {
		t.Fatal(err)
	}
	return id, r.str(t, "session", "access_token"), r.str(t, "session", "refresh_token")
}

// updatesApp is a local app with a user holding an API key that registers
// devices.
func updatesApp(t *testing.T) (*app.App, int64, string) {
	t.Helper()
	ctx := context.Background()
	a, err := app.Local(ctx, localConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	u, err := a.Identity.Register(ctx, identity.Registration{Email: "poller@example.com", Password: "Device1Owner", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := a.Identity.CreateAPIKey(ctx, u.ID, identity.NewAPIKey{Name: "agent",
		Permissions: []identity.Permission{{ObType: "ForDeviceAuthenticate", ObID: "*", Actions: []string{"authenticate", "validate", "revoke"}}}})
	if err != nil {
		t.Fatal(err)
	}
	return a, u.ID, key
}

func updatesQuoted(s string) string { return `"` + s + `"` }

// TestUpdatesScenarios runs the cert-ctrl device protocol's scenarios 9
// and 11 (§7) against the local server over HTTP.
func TestUpdatesScenarios(t *testing.T) {
	a, userID, key := updatesApp(t)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	ctx := context.Background()
	devA, accessA, refreshA := updatesDevice(t, srv.URL, key, 1)
	devB, accessB, _ := updatesDevice(t, srv.URL, key, 2)

	// 9. Nothing pending: 204, quoted ETag, no body.
	p := updatesGet(t, srv.URL, "?limit=20", accessA, "")
	if p.Status != 204 || p.Body != "" || p.Header.Get("ETag") != updatesQuoted("0-0") || p.Header.Get("X-Poll-Interval") == "" {
		t.Fatalf("empty poll: %d %v %q", p.Status, p.Header, p.Body)
	}

	// 250 signals paged 100 at a time, resuming alternately through
	// If-None-Match and ?cursor: each arrives once, in order, with type,
	// ts_ms and ref.
	for i := range 250 {
		if err := a.Stream.Signal(ctx, userID, devA, devices.SignalCertUpdated, map[string]any{"cert_id": i + 1}); err != nil {
			t.Fatal(err)
		}
	}
	cursor, got, pages := "", []int{}, 0
	tsSeen := map[int64]bool{}
	for {
		query, inm := "?limit=100", ""
		if pages%2 == 0 {
			inm = updatesQuoted(cursor)
		} else {
			query += "&cursor=" + cursor
		}
		if cursor == "" {
			inm = ""
		}
		p := updatesGet(t, srv.URL, query, accessA, inm)
		if p.Status == 204 {
			if p.Header.Get("ETag") != updatesQuoted(cursor) {
				t.Fatalf("204 ETag %s, cursor %s", p.Header.Get("ETag"), cursor)
			}
			break
		}
		if p.Status != 200 || p.Data == nil || p.Data.Cursor == nil || p.Header.Get("ETag") != updatesQuoted(*p.Data.Cursor) ||
			p.Header.Get("Cache-Control") != "no-store" || !strings.Contains(p.Body, `"cursor":"`) {
			t.Fatalf("page %d: %d %v %.300s", pages, p.Status, p.Header, p.Body)
		}
		for _, s := range p.Data.Signals {
			if s.Type == nil || *s.Type != "cert.updated" || s.TsMs == nil || tsSeen[*s.TsMs] || s.Ref == nil {
				t.Fatalf("signal %+v in %.300s", s, p.Body)
			}
			tsSeen[*s.TsMs] = true
			got = append(got, int(s.Ref["cert_id"].(float64)))
		}
		cursor, pages = *p.Data.Cursor, pages+1
	}
	if pages != 3 || len(got) != 250 {
		t.Fatalf("%d pages, %d signals", pages, len(got))
	}
	for i, v := range got {
		if v != i+1 {
			t.Fatalf("signal %d is cert %d: lost or duplicated", i, v)
		}
	}

	// Long poll: held until a signal arrives, then answered at once; wait=0
	// answers immediately.
	start := time.Now()
	if p := updatesGet(t, srv.URL, "?wait=0", accessA, updatesQuoted(cursor)); p.Status != 204 || time.Since(start) > time.Second {
		t.Fatalf("wait=0: %d after %v", p.Status, time.Since(start))
	}
	held := make(chan updatesPoll, 1)
	start = time.Now()
	go func() { held <- updatesGet(t, srv.URL, "?wait=30", accessA, updatesQuoted(cursor)) }()
	for deadline := time.Now().Add(5 * time.Second); a.Stream.Waiting() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the long poll is not held")
		}
	}
	if err := a.Stream.Signal(ctx, userID, devA, devices.SignalInstallUpdated, map[string]any{"config_id": 1, "version": 2, "installs_hash_b64": nil}); err != nil {
		t.Fatal(err)
	}
	if p := <-held; p.Status != 200 || len(p.Data.Signals) != 1 || *p.Data.Signals[0].Type != "install.updated" || time.Since(start) > 2*time.Second ||
		p.Header.Get("X-Poll-Interval") != "1" {
		t.Fatalf("long poll: %d %.200s after %v, X-Poll-Interval %q", p.Status, p.Body, time.Since(start), p.Header.Get("X-Poll-Interval"))
	} else {
		cursor = *p.Data.Cursor
	}
	t.Logf("long poll answered %v after the request", time.Since(start))

	// 11. Missing or garbled bearer: 401; after a refresh the same call
	// succeeds.
	for _, tok := range []string{"", "not-a-jwt", accessA[:len(accessA)-4] + "AAAA"} {
		if p := updatesGet(t, srv.URL, "", tok, updatesQuoted(cursor)); p.Status != 401 || p.Error == nil || p.Error.Code != 5018 {
			t.Fatalf("token %.12q: %d %s", tok, p.Status, p.Body)
		}
	}
	rt := deviceClient{t: t, base: srv.URL}.do("POST", "/auth/refresh", "", map[string]any{"refresh_token": refreshA})
	if p := updatesGet(t, srv.URL, "", rt.str(t, "session", "access_token"), updatesQuoted(cursor)); rt.Status != 200 || p.Status != 204 {
		t.Fatalf("after refresh: %d, poll %d %s", rt.Status, p.Status, p.Body)
	}

	// Another device's token never reads this device's signals: 0 of 251,
	// from the start, with A's cursors, by query or header.
	leaked := 0
	for _, c := range []struct{ query, inm string }{{"", ""}, {"?cursor=0-0", ""}, {"", updatesQuoted("0-0")}, {"?limit=100", ""}} {
		p := updatesGet(t, srv.URL, c.query, accessB, c.inm)
		if p.Data != nil {
			leaked += len(p.Data.Signals)
		}
		if p.Status != 204 {
			t.Errorf("device B %+v: %d %s", c, p.Status, p.Body)
		}
	}
	if p := updatesGet(t, srv.URL, "", accessB, updatesQuoted(cursor)); p.Status != 409 || strings.Contains(p.Body, "cert_id") {
		t.Errorf("device B with A's cursor: %d %s", p.Status, p.Body)
	}
	if leaked != 0 {
		t.Fatalf("device B read %d of device A's signals", leaked)
	}
	if err := a.Stream.Signal(ctx, userID, devB, devices.SignalCertUnassigned, map[string]any{"cert_id": 9}); err != nil {
		t.Fatal(err)
	}
	if p := updatesGet(t, srv.URL, "", accessB, ""); p.Status != 200 || len(p.Data.Signals) != 1 || *p.Data.Signals[0].Type != "cert.unassigned" {
		t.Fatalf("device B's own signal: %d %s", p.Status, p.Body)
	}
}

// updatesClock is real time shifted by a settable offset.
type updatesClock struct{ offset atomic.Int64 }

func (c *updatesClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// updatesReads counts a store's reads.
type updatesReads struct {
	store.Store
	n atomic.Int64
}

func (c *updatesReads) Get(ctx context.Context, k store.Key) (store.Item, error) {
	c.n.Add(1)
	return c.Store.Get(ctx, k)
}

func (c *updatesReads) Query(ctx context.Context, q store.Query) (store.Page, error) {
	c.n.Add(1)
	return c.Store.Query(ctx, q)
}

// TestUpdatesTrimmedCursorScenario is scenario 10: a cursor whose signals
// expired is 409 code 40901 full_resync; without a cursor the next poll
// succeeds. The app's stream is replaced by one whose clock can lag a
// retention behind, so that it writes entries already expired; and every
// empty poll is counted at exactly one store read.
func TestUpdatesTrimmedCursorScenario(t *testing.T) {
	a, userID, key := updatesApp(t)
	clock := &updatesClock{}
	reads := &updatesReads{Store: a.Store}
	a.Stream = devices.NewStream(reads, devices.StreamConfig{Now: clock.Now})
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	ctx := context.Background()
	dev, access, _ := updatesDevice(t, srv.URL, key, 3)

	emptyPoll := func(inm string) updatesPoll {
		t.Helper()
		before := reads.n.Load()
		p := updatesGet(t, srv.URL, "", access, inm)
		if n := reads.n.Load() - before; n != 1 {
			t.Fatalf("poll at %s: %d store reads", inm, n)
		}
		return p
	}
	if p := emptyPoll(""); p.Status != 204 {
		t.Fatalf("empty: %d", p.Status)
	}
	if err := a.Stream.Signal(ctx, userID, dev, devices.SignalCertUpdated, map[string]any{"cert_id": 1}); err != nil {
		t.Fatal(err)
	}
	p := updatesGet(t, srv.URL, "", access, "")
	if p.Status != 200 {
		t.Fatalf("first signal: %d %s", p.Status, p.Body)
	}
	agentCursor := *p.Data.Cursor
	if p := emptyPoll(updatesQuoted(agentCursor)); p.Status != 204 || p.Header.Get("ETag") != updatesQuoted(agentCursor) {
		t.Fatalf("at the head: %d %v", p.Status, p.Header)
	}

	// The agent goes away; signals written meanwhile outlive retention
	// (written with the clock a retention and more behind), then new ones
	// arrive.
	clock.offset.Store(int64(-devices.DefaultStreamRetention - 2*time.Second))
	for i := range 3 {
		if err := a.Stream.Signal(ctx, userID, dev, devices.SignalCertUpdated, map[string]any{"cert_id": 10 + i}); err != nil {
			t.Fatal(err)
		}
	}
	clock.offset.Store(0)
	if err := a.Stream.Signal(ctx, userID, dev, devices.SignalInstallUpdated, map[string]any{"config_id": 1, "version": 3}); err != nil {
		t.Fatal(err)
	}

	p = emptyPoll(updatesQuoted(agentCursor))
	if p.Status != 409 || p.Error == nil || p.Error.Code != 40901 || p.Data != nil || p.Error.Params["action"] != "full_resync" ||
		p.Error.Params["reset_cursor"] != true || p.Error.Params["signal_type"] != "state.resync_required" ||
		p.Error.Params["reason"] != "cursor_trimmed" || p.Error.Params["earliest_retained_id"] == nil {
		t.Fatalf("trimmed cursor: %d %s", p.Status, p.Body)
	}
	// The agent clears its cursor: the poll succeeds with what is kept
	// (the first signal, which the agent's de-duplication skips, and the
	// new one), not the expired three.
	p = updatesGet(t, srv.URL, "?limit=20", access, "")
	if p.Status != 200 || len(p.Data.Signals) != 2 || *p.Data.Signals[1].Type != "install.updated" || *p.Data.Cursor == agentCursor {
		t.Fatalf("after resync: %d %s", p.Status, p.Body)
	}
	if fmt.Sprint(p.Data.Signals[0].Ref["cert_id"], p.Data.Signals[1].Ref["version"]) != "1 3" {
		t.Fatalf("refs %v %v", p.Data.Signals[0].Ref, p.Data.Signals[1].Ref)
	}
	if q := emptyPoll(updatesQuoted(*p.Data.Cursor)); q.Status != 204 {
		t.Fatalf("after resync, at the head: %d %s", q.Status, q.Body)
	}
}
