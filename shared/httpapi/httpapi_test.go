package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/httpapi"
)

type envelope struct {
	Data  json.RawMessage    `json:"data"`
	Error *httpapi.ErrorBody `json:"error"`
}

type echoBody struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
	Tags  []string
}

// server returns the test router behind the shared middleware, and the
// buffer its log goes to.
func server(t *testing.T) (http.Handler, *bytes.Buffer) {
	t.Helper()
	var logBuf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logBuf, nil))
	group := httpapi.Group{Name: "test", Routes: []httpapi.Route{
		{Method: "POST", Path: "/echo", Handler: httpapi.Endpoint(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
			var b echoBody
			if err := httpapi.DecodeJSON(r, &b); err != nil {
				return 0, nil, err
			}
			return http.StatusCreated, b, nil
		})},
		{Method: "GET", Path: "/items/{id}", Handler: httpapi.Endpoint(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
			if r.PathValue("id") == "missing" {
				return 0, nil, apperr.New(apperr.NotFound, "item %s not found", r.PathValue("id"))
			}
			return http.StatusOK, map[string]string{"id": r.PathValue("id")}, nil
		})},
		{Method: "DELETE", Path: "/items/{id}", Handler: httpapi.Endpoint(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
			return http.StatusNoContent, nil, nil
		})},
		{Method: "GET", Path: "/panic", Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic("secret detail 42")
		})},
		{Method: "GET", Path: "/fail", Handler: httpapi.Endpoint(func(w http.ResponseWriter, r *http.Request) (int, any, error) {
			return 0, nil, errors.New("database password=hunter2 rejected")
		})},
	}}
	return httpapi.Wrap(httpapi.NewRouter(group), log), &logBuf
}

func do(t *testing.T, h http.Handler, method, path string, body io.Reader) (*httptest.ResponseRecorder, envelope) {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var env envelope
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, path, rec.Body.String())
		}
	}
	return rec, env
}

func wantError(t *testing.T, rec *httptest.ResponseRecorder, env envelope, status, code int, whatContains string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	if env.Error == nil || env.Data != nil {
		t.Fatalf("want an error envelope without data, got %s", rec.Body)
	}
	if env.Error.Code != code {
		t.Errorf("error.code = %d, want %d", env.Error.Code, code)
	}
	if !strings.Contains(env.Error.What, whatContains) {
		t.Errorf("error.what = %q, want it to contain %q", env.Error.What, whatContains)
	}
}

func TestSuccessEnvelope(t *testing.T) {
	h, _ := server(t)
	rec, env := do(t, h, "GET", "/items/7", nil)
	if rec.Code != 200 || string(env.Data) != `{"id":"7"}` || env.Error != nil {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	rec, _ = do(t, h, "DELETE", "/items/7", nil)
	if rec.Code != 204 || rec.Body.Len() != 0 {
		t.Fatalf("204 should have no body, got %d %q", rec.Code, rec.Body)
	}
}

func TestUnknownRouteAndWrongMethod(t *testing.T) {
	h, _ := server(t)
	rec, env := do(t, h, "GET", "/nope", nil)
	wantError(t, rec, env, 404, 5003, "no route for GET /nope")

	rec, env = do(t, h, "PUT", "/items/3", nil)
	wantError(t, rec, env, 405, 5005, "method PUT is not allowed")
	if got := rec.Header().Get("Allow"); got != "DELETE, GET, HEAD" {
		t.Errorf("Allow = %q", got)
	}
	rec, env = do(t, h, "GET", "/echo", nil)
	wantError(t, rec, env, 405, 5005, "GET")

	rec, env = do(t, h, "GET", "/items/missing", nil)
	wantError(t, rec, env, 404, 5003, "item missing not found")
}

func TestJSONErrorsNameTheProblem(t *testing.T) {
	h, _ := server(t)
	cases := []struct{ body, what, field string }{
		{``, "request body is empty", ""},
		{`{"name":`, "ends in the middle", ""},
		{`{"name": x}`, "malformed JSON at byte 10", ""},
		{`{"name":"a","count":"three"}`, `field "count" must be a number, not string`, "count"},
		{`[1,2]`, "request body must be an object, not array", ""},
		{`{"name":"a"} {"name":"b"}`, "data after the JSON value", ""},
	}
	for _, c := range cases {
		rec, env := do(t, h, "POST", "/echo", strings.NewReader(c.body))
		wantError(t, rec, env, 400, 9000, c.what)
		if c.field != "" && env.Error.Params["field"] != c.field {
			t.Errorf("body %q: params.field = %v, want %q", c.body, env.Error.Params["field"], c.field)
		}
	}
	rec, env := do(t, h, "POST", "/echo", strings.NewReader(`{"name":"a","count":2}`))
	if rec.Code != 201 || !strings.Contains(string(env.Data), `"count":2`) {
		t.Fatalf("valid body: %d %s", rec.Code, rec.Body)
	}
}

func TestBodyOverOneMiBIs413(t *testing.T) {
	h, _ := server(t)
	big := `{"name":"` + strings.Repeat("a", httpapi.MaxBodyBytes) + `"}`
	// With a Content-Length the request is refused before the handler runs.
	rec, env := do(t, h, "POST", "/echo", strings.NewReader(big))
	wantError(t, rec, env, 413, 5010, "larger than 1048576 bytes")
	// Without one (chunked) the cap trips while decoding.
	req := httptest.NewRequest("POST", "/echo", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 413 {
		t.Fatalf("chunked oversize body: status %d, body %s", rec.Code, rec.Body)
	}
	// Exactly at the cap is accepted.
	exact := `{"name":"` + strings.Repeat("a", httpapi.MaxBodyBytes-len(`{"name":""}`)) + `"}`
	rec, _ = do(t, h, "POST", "/echo", strings.NewReader(exact))
	if rec.Code != 201 {
		t.Fatalf("body of exactly %d bytes: status %d", len(exact), rec.Code)
	}
}

func TestRequestIDOnEveryResponse(t *testing.T) {
	h, logBuf := server(t)
	seen := map[string]bool{}
	for _, path := range []string{"/items/1", "/nope", "/panic"} {
		rec, _ := do(t, h, "GET", path, nil)
		id := rec.Header().Get(httpapi.RequestIDHeader)
		if len(id) != 24 || seen[id] {
			t.Fatalf("%s: request id %q missing or repeated", path, id)
		}
		seen[id] = true
		if !strings.Contains(logBuf.String(), `"request_id":"`+id+`"`) {
			t.Errorf("%s: access log lacks request id %s", path, id)
		}
	}
	req := httptest.NewRequest("GET", "/items/1", nil)
	req.Header.Set(httpapi.RequestIDHeader, "edge-abc.123")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get(httpapi.RequestIDHeader); got != "edge-abc.123" {
		t.Errorf("incoming request id not kept: %q", got)
	}
	req.Header.Set(httpapi.RequestIDHeader, "bad id\nwith newline")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get(httpapi.RequestIDHeader); len(got) != 24 {
		t.Errorf("malformed incoming request id should be replaced, got %q", got)
	}
}

func TestPanicAndInternalErrorsHideDetail(t *testing.T) {
	h, logBuf := server(t)
	rec, env := do(t, h, "GET", "/panic", nil)
	wantError(t, rec, env, 500, 5001, "internal error")
	if strings.Contains(rec.Body.String(), "secret detail") {
		t.Fatal("panic detail leaked to the client")
	}
	if !strings.Contains(logBuf.String(), "secret detail 42") || !strings.Contains(logBuf.String(), `"status":500`) {
		t.Fatalf("panic detail and status 500 should be in the log: %s", logBuf)
	}

	rec, env = do(t, h, "GET", "/fail", nil)
	wantError(t, rec, env, 500, 5001, "internal error")
	if strings.Contains(rec.Body.String(), "hunter2") {
		t.Fatal("internal error detail leaked to the client")
	}
	if !strings.Contains(logBuf.String(), "hunter2") {
		t.Fatal("internal error detail should be logged")
	}
}

func TestAccessLogLine(t *testing.T) {
	h, logBuf := server(t)
	do(t, h, "GET", "/items/5", nil)
	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
		if err := json.Unmarshal([]byte(l), &line); err == nil && line["msg"] == "request" {
			break
		}
	}
	if line["method"] != "GET" || line["path"] != "/items/5" || line["status"] != float64(200) || line["bytes"].(float64) <= 0 {
		t.Fatalf("access log line = %v", line)
	}
	if _, ok := line["duration_ms"]; !ok {
		t.Fatalf("access log line lacks duration: %v", line)
	}
}

func TestHealth(t *testing.T) {
	okCheck := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("connection refused to 10.0.0.7") }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	h := httpapi.Wrap(httpapi.NewRouter(httpapi.HealthGroup("v1.2.3", map[string]httpapi.Check{"store": okCheck, "queue": okCheck})), log)
	rec, env := do(t, h, "GET", "/health", nil)
	var report map[string]string
	if err := json.Unmarshal(env.Data, &report); err != nil || rec.Code != 200 {
		t.Fatalf("healthy: %d %s", rec.Code, rec.Body)
	}
	if report["version"] != "v1.2.3" || report["store"] != "ok" || report["queue"] != "ok" || report["status"] != "ok" {
		t.Fatalf("report = %v", report)
	}

	h = httpapi.Wrap(httpapi.NewRouter(httpapi.HealthGroup("v1.2.3", map[string]httpapi.Check{"store": okCheck, "queue": down})), log)
	rec, env = do(t, h, "GET", "/health", nil)
	wantError(t, rec, env, 503, 5030, "unavailable")
	if env.Error.Params["queue"] != "unavailable" || env.Error.Params["store"] != "ok" {
		t.Fatalf("params = %v", env.Error.Params)
	}
	if strings.Contains(rec.Body.String(), "10.0.0.7") {
		t.Fatal("check failure detail leaked")
	}
}

func TestDialectAnswersItsOwn404And405(t *testing.T) {
	dialect := httpapi.Group{Name: "d", Prefix: "/api/v1/d/",
		Errors: func(w http.ResponseWriter, r *http.Request, err error, _ map[string]any) {
			status, _ := httpapi.Status(err)
			w.WriteHeader(status)
			io.WriteString(w, `{"code":1,"message":"dialect"}`)
		},
		Routes: []httpapi.Route{{Method: "POST", Path: "/api/v1/d/thing", Handler: http.NotFoundHandler()}}}
	h := httpapi.NewRouter(dialect, httpapi.Group{Name: "other", Routes: []httpapi.Route{{Method: "GET", Path: "/x", Handler: http.NotFoundHandler()}}})
	for path, want := range map[string]string{
		"/api/v1/d/thing": `{"code":1,"message":"dialect"}`, // 405
		"/api/v1/d/nope":  `{"code":1,"message":"dialect"}`, // 404
		"/elsewhere":      `{"error":{"code":5003,"what":"no route for GET /elsewhere"}}` + "\n",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Body.String() != want {
			t.Errorf("GET %s: %d %q, want %q", path, rec.Code, rec.Body, want)
		}
	}
}
