package agent

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
)

// state is state.json.
type state struct {
	Server string `json:"server"`
	// DeviceURL, when set, serves the device's own calls
	// (/apiv1/devices/self/*): the device-self function URL of a cloud
	// deployment, which polls reach without API Gateway.
	DeviceURL      string `json:"device_url,omitempty"`
	DevicePublicID string `json:"device_public_id"`
	DeviceID       int64  `json:"device_id,omitempty"`
	Cursor         string `json:"cursor,omitempty"`
	// PendingCAs are CAs whose bundle the server could not serve (503):
	// fetched again on the next poll.
	PendingCAs []int64 `json:"pending_cas,omitempty"`
}

// session is session.json (and the server's data.session).
type session struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in,omitempty"`
	SavedAt      int64  `json:"saved_at,omitempty"`
}

const (
	stateFile   = "state.json"
	sessionFile = "session.json"
	keyFile     = "dev_sk.bin"
	configFile  = "install_config.json"
)

func (a *Agent) path(name string) string { return filepath.Join(a.StateDir, name) }

func writeJSON(path string, v any, mode os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = writeFileAtomic(path, append(b, '\n'), mode)
	return err
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func (a *Agent) saveState() error   { return writeJSON(a.path(stateFile), a.st, 0o600) }
func (a *Agent) saveSession() error { return writeJSON(a.path(sessionFile), a.sess, 0o600) }

// load reads the state and session of a logged-in agent.
func (a *Agent) load() error {
	if err := readJSON(a.path(stateFile), &a.st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no agent state in %s: run login first", a.StateDir)
		}
		return err
	}
	if err := readJSON(a.path(sessionFile), &a.sess); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no session in %s: run login first", a.StateDir)
		}
		return err
	}
	return nil
}

// Keys returns the device's X25519 key pair, the public key derived
// from the stored secret key.
func (a *Agent) Keys() (pk, sk *[32]byte, err error) {
	b, err := os.ReadFile(a.path(keyFile))
	if err != nil {
		return nil, nil, err
	}
	if len(b) != 32 {
		return nil, nil, fmt.Errorf("%s: %d bytes, want 32", a.path(keyFile), len(b))
	}
	sk = new([32]byte)
	copy(sk[:], b)
	pub, err := curve25519.X25519(sk[:], curve25519.Basepoint)
	if err != nil {
		return nil, nil, err
	}
	pk = new([32]byte)
	copy(pk[:], pub)
	return pk, sk, nil
}

// DevicePublicID is the saved device_public_id ("" before login).
func (a *Agent) DevicePublicID() string {
	var st state
	readJSON(a.path(stateFile), &st)
	return st.DevicePublicID
}

// DeviceID is the server's id of the device (0 before login).
func (a *Agent) DeviceID() int64 {
	var st state
	readJSON(a.path(stateFile), &st)
	return st.DeviceID
}

// prepare creates the state directory, the key pair and the
// device_public_id when they do not exist yet.
func (a *Agent) prepare(server string) (pk *[32]byte, err error) {
	if err := os.MkdirAll(a.StateDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(a.StateDir, 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Stat(a.path(keyFile)); errors.Is(err, os.ErrNotExist) {
		_, sk, err := box.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		if _, err := writeFileAtomic(a.path(keyFile), sk[:], 0o600); err != nil {
			return nil, err
		}
		a.printf("created the device key pair in %s", a.path(keyFile))
	}
	pk, _, err = a.Keys()
	if err != nil {
		return nil, err
	}
	if err := readJSON(a.path(stateFile), &a.st); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if a.st.DevicePublicID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		h := hex.EncodeToString(b[:])
		a.st.DevicePublicID = h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	}
	if a.st.Server != server {
		a.st.Cursor = "" // another server's cursor means nothing here
	}
	a.st.Server = server
	return pk, a.saveState()
}

// LoginOptions are login's.
type LoginOptions struct {
	Server string
	// APIKey registers with POST /apiv1/me/devices; without it the
	// device authorization grant runs.
	APIKey string
	// Name is the device's name (default "certfleet-agent <hostname>").
	Name string
	// DeviceURL is where the device's own calls go (state.DeviceURL); ""
	// means Server.
	DeviceURL string
}

// Login registers the device with the server and saves its session.
func (a *Agent) Login(ctx context.Context, o LoginOptions) error {
	if o.Server == "" {
		return errors.New("login: --server is required")
	}
	if o.DeviceURL != "" {
		if u, err := url.Parse(o.DeviceURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return errors.New("login: --device-url must be an http(s) URL")
		}
	}
	pk, err := a.prepare(o.Server)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	a.st.DeviceURL = strings.TrimRight(o.DeviceURL, "/")
	name := o.Name
	if name == "" {
		host, _ := os.Hostname()
		name = Name + " " + host
	}
	body := map[string]any{
		"device_public_id": a.st.DevicePublicID, "dev_pk": base64.StdEncoding.EncodeToString(pk[:]),
		"platform": runtime.GOOS, "model": runtime.GOARCH, "app_version": a.Version, "name": name,
		"user_agent": Name + "/" + a.Version,
	}
	var r *response
	if o.APIKey != "" {
		r, err = a.send(ctx, "POST", o.Server, "/apiv1/me/devices", body, o.APIKey, nil)
	} else {
		var userID any
		var code string
		userID, code, err = a.deviceGrant(ctx, o.Server)
		if err != nil {
			return err
		}
		body["user_id"], body["registration_code"] = userID, code
		r, err = a.send(ctx, "POST", o.Server, "/apiv1/device/registration", body, "", nil)
	}
	if err != nil {
		return fmt.Errorf("login: register the device: %w", err)
	}
	if r.Status/100 != 2 {
		return r.failure("login: register the device")
	}
	var reg struct {
		Device struct {
			ID flexInt `json:"id"`
		} `json:"device"`
		Session session `json:"session"`
	}
	if err := r.data(&reg); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if reg.Session.AccessToken == "" {
		return errors.New("login: the registration answer has no access token")
	}
	reg.Session.SavedAt = time.Now().Unix()
	a.sess = reg.Session
	a.st.DeviceID = int64(reg.Device.ID)
	if err := a.saveSession(); err != nil {
		return err
	}
	if err := a.saveState(); err != nil {
		return err
	}
	a.printf("registered device %d (%s) with %s", a.st.DeviceID, a.st.DevicePublicID, o.Server)
	if a.st.DeviceURL != "" {
		a.printf("device calls go to %s", a.st.DeviceURL)
	}
	return nil
}

// deviceGrant runs the device authorization grant (§1.1) and returns
// the approving user and the registration code.
func (a *Agent) deviceGrant(ctx context.Context, server string) (userID any, code string, err error) {
	r, err := a.send(ctx, "POST", server, "/auth/device", map[string]any{"action": "device_start",
		"scopes": []string{"openid", "profile", "email"}, "interval": 5, "expires_in": 900}, "", nil)
	if err != nil {
		return nil, "", fmt.Errorf("login: start the device authorization: %w", err)
	}
	if r.Status/100 != 2 {
		return nil, "", r.failure("login: start the device authorization")
	}
	var start struct {
		DeviceCode              string `json:"device_code"`
		UserCode                string `json:"user_code"`
		VerificationURI         string `json:"verification_uri"`
		VerificationURIComplete string `json:"verification_uri_complete"`
		Interval                int    `json:"interval"`
		ExpiresIn               int    `json:"expires_in"`
	}
	if err := r.data(&start); err != nil || start.DeviceCode == "" {
		return nil, "", fmt.Errorf("login: start the device authorization: %v", err)
	}
	uri := start.VerificationURIComplete
	if uri == "" {
		uri = start.VerificationURI
	}
	a.printf("Open %s and approve code %s", uri, start.UserCode)
	interval := time.Duration(max(start.Interval, 1)) * time.Second
	deadline := time.Now().Add(time.Duration(max(start.ExpiresIn, 30)) * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-time.After(interval):
		}
		r, err := a.send(ctx, "POST", server, "/auth/device", map[string]any{"action": "device_poll", "device_code": start.DeviceCode}, "", nil)
		if err != nil {
			continue // transport errors are retried on the same cadence
		}
		var poll struct {
			Status           string          `json:"status"`
			UserID           json.RawMessage `json:"user_id"`
			RegistrationCode string          `json:"registration_code"`
		}
		if r.data(&poll) != nil {
			if r.Status/100 == 4 && r.Status != 429 {
				return nil, "", r.failure("login: poll the device authorization")
			}
			continue
		}
		switch poll.Status {
		case "ready", "approved":
			if poll.RegistrationCode == "" {
				return nil, "", errors.New("login: the approval carries no registration code")
			}
			if len(poll.UserID) == 0 || string(poll.UserID) == "null" {
				return nil, "", errors.New("login: the approval carries no user_id")
			}
			return poll.UserID, poll.RegistrationCode, nil
		case "denied", "access_denied":
			return nil, "", errors.New("login: the device authorization was denied")
		case "expired":
			return nil, "", errors.New("login: the device authorization expired")
		}
	}
	return nil, "", errors.New("login: the device authorization expired")
}
