package certctrl_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/httpapi/certctrl"
	"github.com/certfleet/certfleet/shared/identity/devicetoken"
	"github.com/certfleet/certfleet/shared/internal/testenv"
)

// selfEnv is the updates route over real parts: a bolt store, device
// tokens signed by devicetoken, the stream.
type selfEnv struct {
	t       *testing.T
	stream  *devices.Stream
	tokens  *devicetoken.Service
	handler http.Handler
}

func newSelfEnv(t *testing.T, cfg devices.StreamConfig) *selfEnv {
	p := testenv.New(t)
	tokens := devicetoken.New(p.Store, p.Sealer, devicetoken.Config{})
	stream := devices.NewStream(p.Store, cfg)
	h := httpapi.Wrap(httpapi.NewRouter(httpapi.Group{Name: "deviceself", Routes: certctrl.DeviceSelfRoutes(stream, tokens)}), p.Log)
	return &selfEnv{t: t, stream: stream, tokens: tokens, handler: h}
}

func (e *selfEnv) token(deviceID, userID int64) string {
	e.t.Helper()
	tk, err := e.tokens.Issue(context.Background(), deviceID, userID)
	if err != nil {
		e.t.Fatal(err)
	}
	return tk.AccessToken
}

// get polls; header pairs follow the query.
func (e *selfEnv) get(query, token string, header ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest("GET", certctrl.UpdatesPath+query, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

type selfBody struct {
	Data *struct {
		Cursor  *string
		Signals []map[string]json.RawMessage
	}
	Error *httpapi.ErrorBody
}

func selfDecode(t *testing.T, rec *httptest.ResponseRecorder) selfBody {
	t.Helper()
	var b selfBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatalf("%d: not JSON: %q", rec.Code, rec.Body)
	}
	return b
}

func TestDeviceSelfUpdatesRoute(t *testing.T) {
	e := newSelfEnv(t, devices.StreamConfig{PollInterval: 90 * time.Second})
	tok := e.token(1, 10)

	// Empty: 204, no body, quoted ETag of the start, no-store, interval.
	rec := e.get("?limit=20", tok)
	if rec.Code != 204 || rec.Body.Len() != 0 || rec.Header().Get("ETag") != `"0-0"` ||
		rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("X-Poll-Interval") != "90" {
		t.Fatalf("empty poll: %d %v %q", rec.Code, rec.Header(), rec.Body)
	}

	for i := range 3 {
		if err := e.stream.Signal(context.Background(), 10, 1, devices.SignalCertUpdated, map[string]any{"cert_id": i + 1}); err != nil {
			t.Fatal(err)
		}
	}
	rec = e.get("", tok)
	b := selfDecode(t, rec)
	if rec.Code != 200 || b.Data == nil || b.Data.Cursor == nil || len(b.Data.Signals) != 3 ||
		rec.Header().Get("ETag") != `"`+*b.Data.Cursor+`"` || rec.Header().Get("X-Poll-Interval") != "90" ||
		rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("poll: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	for _, sg := range b.Data.Signals {
		var typ string
		var ts int64
		var ref map[string]any
		if json.Unmarshal(sg["type"], &typ) != nil || json.Unmarshal(sg["ts_ms"], &ts) != nil || json.Unmarshal(sg["ref"], &ref) != nil ||
			typ != "cert.updated" || ts <= 0 || ref == nil || len(sg) != 3 {
			t.Fatalf("signal %s", rec.Body)
		}
	}
	head := *b.Data.Cursor

	// If-None-Match beats the query, with quotes and W/ stripped.
	for _, inm := range []string{`"` + head + `"`, `W/"` + head + `"`, head} {
		if rec := e.get("?cursor=0-0", tok, "If-None-Match", inm); rec.Code != 204 || rec.Header().Get("ETag") != `"`+head+`"` {
			t.Fatalf("If-None-Match %s: %d %s", inm, rec.Code, rec.Body)
		}
	}
	if rec := e.get("?cursor="+head, tok, "If-None-Match", `"0-0"`); rec.Code != 200 || len(selfDecode(t, rec).Data.Signals) != 3 {
		t.Fatalf("If-None-Match 0-0 over a head cursor: %d %s", rec.Code, rec.Body)
	}
	if rec := e.get("?limit=2&cursor=0-0", tok); rec.Code != 200 || len(selfDecode(t, rec).Data.Signals) != 2 {
		t.Fatalf("limit 2: %d %s", rec.Code, rec.Body)
	}

	// Bad parameters: 400 naming them.
	for query, field := range map[string]string{"?limit=0": "limit", "?limit=101": "limit", "?limit=x": "limit",
		"?wait=31": "wait", "?wait=-1": "wait", "?wait=1.5": "wait", "?cursor=nope": "cursor"} {
		rec := e.get(query, tok)
		if b := selfDecode(t, rec); rec.Code != 400 || b.Error == nil || b.Error.Code != 5000 || b.Error.Params["field"] != field {
			t.Errorf("%s: %d %s", query, rec.Code, rec.Body)
		}
	}

	// A cursor the stream never reached: 409 40901 full_resync, no data.
	ahead := fmt.Sprintf("%013d-0000", time.Now().Add(time.Hour).UnixMilli())
	rec = e.get("", tok, "If-None-Match", `"`+ahead+`"`)
	b = selfDecode(t, rec)
	want := map[string]any{"action": "full_resync", "reset_cursor": true, "signal_type": "state.resync_required",
		"reason": "cursor_trimmed", "earliest_retained_id": head}
	if rec.Code != 409 || b.Error == nil || b.Error.Code != 40901 || b.Data != nil || fmt.Sprint(b.Error.Params) != fmt.Sprint(want) {
		t.Fatalf("trimmed: %d %s", rec.Code, rec.Body)
	}

	// Credentials: none, garbled, another device's token (its own, empty
	// stream), a deleted device.
	for _, bad := range []string{"", "garbage", tok[:len(tok)-3] + "abc"} {
		if rec := e.get("", bad); rec.Code != 401 || rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("token %.10q: %d", bad, rec.Code)
		}
	}
	if rec := e.get("", e.token(2, 10)); rec.Code != 204 {
		t.Fatalf("another device: %d %s", rec.Code, rec.Body)
	}
	if err := e.stream.Close(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if rec := e.get("?cursor="+head, tok); rec.Code != 401 {
		t.Fatalf("deleted device: %d %s", rec.Code, rec.Body)
	}
}

func TestDeviceSelfUpdatesLongPoll(t *testing.T) {
	e := newSelfEnv(t, devices.StreamConfig{Recheck: time.Minute})
	tok := e.token(3, 10)
	start := time.Now()
	if rec := e.get("?wait=0", tok); rec.Code != 204 || time.Since(start) > time.Second {
		t.Fatalf("wait=0: %d after %v", rec.Code, time.Since(start))
	}
	done := make(chan *httptest.ResponseRecorder, 1)
	start = time.Now()
	go func() { done <- e.get("?wait=30", tok, "If-None-Match", `"0-0"`) }()
	for deadline := time.Now().Add(5 * time.Second); e.stream.Waiting() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the poll is not held")
		}
	}
	if err := e.stream.Signal(context.Background(), 10, 3, devices.SignalInstallUpdated, map[string]any{"config_id": 1, "version": 2}); err != nil {
		t.Fatal(err)
	}
	rec := <-done
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"install.updated"`) || time.Since(start) > 3*time.Second {
		t.Fatalf("held poll: %d %s after %v", rec.Code, rec.Body, time.Since(start))
	}
	// Held for wait when nothing comes.
	start = time.Now()
	if rec := e.get("?wait=1", tok, "If-None-Match", rec.Header().Get("ETag")); rec.Code != 204 || time.Since(start) < time.Second {
		t.Fatalf("wait=1: %d after %v", rec.Code, time.Since(start))
	}
	if n := e.stream.Waiting(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}
