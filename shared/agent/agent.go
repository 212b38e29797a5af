// Package agent is certfleet-agent's logic: a small device agent for the
// cert-ctrl device protocol the server implements
// (shared/protocol/cert-ctrl-device-protocol.md §1-4). It logs a device
// in (API key or device authorization grant), polls the device's update
// signals, installs the certificates its install config copies, runs its
// exec items and imports the private CAs assigned to the device.
//
// The agent keeps its state in one directory: dev_sk.bin (the X25519
// secret key, 0600), state.json (server, device ids, polling cursor, CAs
// to fetch again), session.json (tokens, 0600), install_config.json (the
// last install config fetched), certs/<id>/pfx.json (the password of the
// certificate's bundle.pfx, 0600) and cas/<id>/ (each assigned CA's
// ca.pem and meta.json, 0644).
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Name is the agent's name in the version notify and its User-Agent.
const Name = "certfleet-agent"

// Agent is one device's agent over its state directory.
type Agent struct {
	// StateDir holds the agent's keys, tokens and cursor.
	StateDir string
	// Client sends the requests (http.DefaultClient when nil).
	Client *http.Client
	// Out receives one line per action (os.Stdout when nil).
	Out io.Writer
	// Version is reported in the version notify.
	Version string
	// ScriptTimeout bounds after_update_script and TrustUpdateCmd (30 s
	// when zero).
	ScriptTimeout time.Duration
	// Wait holds each poll up to Wait seconds until a signal arrives
	// (0..30, the server's wait parameter; 0 answers at once).
	Wait int
	// TrustDir is the trust store directory assigned CAs are written to
	// as certfleet-ca-<id>.crt (none when empty).
	TrustDir string
	// TrustUpdateCmd runs with /bin/sh -c after TrustDir changed (e.g.
	// update-ca-certificates; nothing when empty).
	TrustUpdateCmd string

	st       state
	sess     session
	notified bool
}

// New returns the agent over stateDir writing its lines to out.
func New(stateDir string, out io.Writer) *Agent {
	return &Agent{StateDir: stateDir, Out: out, Version: "dev"}
}

func (a *Agent) printf(format string, args ...any) {
	out := a.Out
	if out == nil {
		out = os.Stdout
	}
	fmt.Fprintf(out, format+"\n", args...)
}

// requestTimeout bounds a request when Client sets no timeout.
const requestTimeout = 60 * time.Second

// client is Client (http.DefaultClient when nil) with a Timeout that
// outlasts a held poll: requestTimeout + Wait when it has none or a
// shorter one than Wait + 30 s.
func (a *Agent) client() *http.Client {
	c := a.Client
	if c == nil {
		c = http.DefaultClient
	}
	wait := time.Duration(max(a.Wait, 0)) * time.Second
	if c.Timeout != 0 && c.Timeout >= wait+30*time.Second {
		return c
	}
	cc := *c
	cc.Timeout = requestTimeout + wait
	return &cc
}

// apiError is the server's error envelope (§6).
type apiError struct {
	Code   int            `json:"code"`
	What   string         `json:"what"`
	Key    string         `json:"key"`
	Params map[string]any `json:"params"`
}

// response is one HTTP answer, read whole.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// data decodes the envelope's data member into into.
func (r *response) data(into any) error {
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(r.Body, &env); err != nil {
		return fmt.Errorf("malformed response (HTTP %d): %w", r.Status, err)
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return fmt.Errorf("response without data (HTTP %d)", r.Status)
	}
	return json.Unmarshal(env.Data, into)
}

// apiErr is the response's error member (zero when it has none).
func (r *response) apiErr() apiError {
	var env struct {
		Error apiError `json:"error"`
	}
	json.Unmarshal(r.Body, &env)
	return env.Error
}

// failure describes an unexpected answer.
func (r *response) failure(what string) error {
	e := r.apiErr()
	msg := e.What
	if msg == "" {
		msg = strings.TrimSpace(string(r.Body))
		if len(msg) > 200 {
			msg = msg[:200]
		}
	}
	if e.Key != "" {
		msg = e.Key + ": " + msg
	}
	return fmt.Errorf("%s: HTTP %d %s", what, r.Status, msg)
}

// send sends one request to server+path with JSON body (when not nil)
// and bearer auth (when not empty).
func (a *Agent) send(ctx context.Context, method, server, path string, body any, bearer string, header http.Header) (*response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(server, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("User-Agent", Name+"/"+a.Version)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := a.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, nil
}

// device sends a request with the device's access token to the device
// URL (the server when none was given), refreshing the tokens once on
// 401/403.
func (a *Agent) device(ctx context.Context, method, path string, body any, header http.Header) (*response, error) {
	if a.sess.AccessToken == "" {
		return nil, errors.New("not logged in: run login first")
	}
	base := a.st.Server
	if a.st.DeviceURL != "" {
		base = a.st.DeviceURL
	}
	r, err := a.send(ctx, method, base, path, body, a.sess.AccessToken, header)
	if err != nil || (r.Status != http.StatusUnauthorized && r.Status != http.StatusForbidden) {
		return r, err
	}
	if err := a.refresh(ctx); err != nil {
		return nil, err
	}
	return a.send(ctx, method, base, path, body, a.sess.AccessToken, header)
}

// refresh rotates the session's tokens (§1.4) and saves them.
func (a *Agent) refresh(ctx context.Context) error {
	if a.sess.RefreshToken == "" {
		return errors.New("the session has no refresh token: run login again")
	}
	r, err := a.send(ctx, "POST", a.st.Server, "/auth/refresh", map[string]string{"refresh_token": a.sess.RefreshToken}, "", nil)
	if err != nil {
		return fmt.Errorf("refresh tokens: %w", err)
	}
	if r.Status/100 != 2 {
		e := r.apiErr()
		if r.Status == 401 && (e.Code == 10003 || e.Key == "refresh_token_rotated" || strings.Contains(e.What, "rotated") || strings.Contains(e.What, "revoked")) {
			return errors.New("the refresh token was rotated or revoked: run login again")
		}
		return r.failure("refresh tokens")
	}
	var d struct {
		Session *session `json:"session"`
		session
	}
	if err := r.data(&d); err != nil {
		return fmt.Errorf("refresh tokens: %w", err)
	}
	s := d.session
	if d.Session != nil {
		s = *d.Session
	}
	if s.AccessToken == "" || s.RefreshToken == "" {
		return errors.New("refresh tokens: the answer has no tokens")
	}
	s.SavedAt = time.Now().Unix()
	a.sess = s
	if err := a.saveSession(); err != nil {
		return err
	}
	a.printf("refreshed the session tokens")
	return nil
}

// flexInt is a JSON integer that may arrive as a string.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*f = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not an integer: %s", b)
	}
	*f = flexInt(n)
	return nil
}

// writeFileAtomic writes data to path through a temp file in the same
// directory and a rename; it reports whether the file changed (an
// identical file with the same mode is left alone).
func writeFileAtomic(path string, data []byte, mode os.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == mode {
			return false, nil
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, err
	}
	name := tmp.Name()
	defer os.Remove(name) // after a successful rename this is a no-op
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(name, path); err != nil {
		return false, err
	}
	return true, nil
}
