package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Signal types the agent handles (§2.3).
const (
	SignalInstallUpdated = "install.updated"
	SignalCertUpdated    = "cert.updated"
	SignalCertUnassigned = "cert.unassigned"
	SignalResync         = "state.resync_required"
)

// Poll is the outcome of one Updates.
type Poll struct {
	// Signals is how many signals the poll returned.
	Signals int
	// Installed is how many files were written.
	Installed int
	// PollInterval is the server's X-Poll-Interval (0 when absent).
	PollInterval time.Duration
}

// RetryError is a 429/503 answer: poll again after After.
type RetryError struct {
	Status int
	After  time.Duration
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("updates: the server answered %d; retry after %s", e.Status, e.After)
}

// signal is one update signal (§2.2).
type signal struct {
	Type string          `json:"type"`
	TsMs int64           `json:"ts_ms"`
	Ref  json.RawMessage `json:"ref"`
}

// Updates polls the device's update signals once (sending the version
// notify first, once per Agent) and handles them.
func (a *Agent) Updates(ctx context.Context) (Poll, error) {
	if err := a.load(); err != nil {
		return Poll{}, err
	}
	if !a.notified {
		a.notify(ctx)
	}
	return a.poll(ctx, true)
}

// notify sends the version notify (§4.3); a failure is retried on the
// next poll.
func (a *Agent) notify(ctx context.Context) {
	ev := map[string]any{"type": "agent_version", "agent": Name, "version": a.Version}
	if a.st.DevicePublicID != "" {
		ev["device_public_id"] = a.st.DevicePublicID
	}
	r, err := a.device(ctx, "POST", "/apiv1/devices/self/notify",
		map[string]any{"schema": "certctrl.device.notify.v1", "events": []any{ev}}, nil)
	switch {
	case err != nil:
		a.printf("version notify failed: %v", err)
	case r.Status/100 != 2:
		a.printf("version notify failed: %v", r.failure("notify"))
	default:
		a.notified = true
	}
}

func (a *Agent) poll(ctx context.Context, resyncAllowed bool) (Poll, error) {
	var h http.Header
	q := "?limit=20"
	if a.st.Cursor != "" {
		h = http.Header{"If-None-Match": {`"` + a.st.Cursor + `"`}}
		q = "?cursor=" + a.st.Cursor + "&limit=20"
	}
	r, err := a.device(ctx, "GET", "/apiv1/devices/self/updates"+q, nil, h)
	if err != nil {
		return Poll{}, fmt.Errorf("updates: %w", err)
	}
	var p Poll
	if n, err := strconv.Atoi(r.Header.Get("X-Poll-Interval")); err == nil && n > 0 {
		p.PollInterval = time.Duration(n) * time.Second
	}
	switch r.Status {
	case http.StatusNoContent:
		if et := r.Header.Get("ETag"); et != "" {
			a.st.Cursor = strings.TrimSuffix(strings.TrimPrefix(et, `"`), `"`)
			if err := a.saveState(); err != nil {
				return p, err
			}
		}
		a.printf("no updates")
		return p, nil
	case http.StatusOK:
		var d struct {
			Cursor  *string  `json:"cursor"`
			Signals []signal `json:"signals"`
		}
		if err := r.data(&d); err != nil {
			return p, fmt.Errorf("updates: %w", err)
		}
		if d.Cursor == nil {
			return p, errors.New("updates: the answer has no cursor")
		}
		// The cursor is persisted before the batch is dispatched (§2.1).
		a.st.Cursor = *d.Cursor
		if err := a.saveState(); err != nil {
			return p, err
		}
		p.Signals = len(d.Signals)
		if len(d.Signals) == 0 {
			a.printf("no updates")
			return p, nil
		}
		n, err := a.dispatch(ctx, d.Signals)
		p.Installed = n
		return p, err
	case http.StatusConflict:
		e := r.apiErr()
		if e.Code == 40901 || e.Params["action"] == "full_resync" {
			a.printf("the cursor is gone (%v): full resync", e.Params["reason"])
			a.st.Cursor = ""
			if err := a.saveState(); err != nil {
				return p, err
			}
			n, err := a.resync(ctx)
			if err != nil || !resyncAllowed {
				p.Installed = n
				return p, err
			}
			q, err := a.poll(ctx, false)
			q.Installed += n
			return q, err
		}
		return p, r.failure("updates")
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		after := 0
		if n, err := strconv.Atoi(strings.TrimSpace(r.Header.Get("Retry-After"))); err == nil {
			after = n
		} else if v, ok := r.apiErr().Params["retry_after"].(float64); ok {
			after = int(v)
		}
		return p, &RetryError{Status: r.Status, After: time.Duration(after) * time.Second}
	}
	return p, r.failure("updates")
}

// resync fetches the install config and installs every certificate it
// copies (a full resync after a cursor gap).
func (a *Agent) resync(ctx context.Context) (int, error) {
	cfg, err := a.fetchInstallConfig(ctx)
	if err != nil {
		return 0, err
	}
	b := newBatch()
	for _, id := range cfg.certIDs() {
		b.mark(id)
	}
	return a.runBatch(ctx, cfg, b, SignalResync)
}

// batch is the certificates one batch of signals touches, in order.
type batch struct {
	certs []int64
	seen  map[int64]bool
}

func newBatch() *batch { return &batch{seen: map[int64]bool{}} }

func (b *batch) mark(id int64) {
	if id > 0 && !b.seen[id] {
		b.seen[id] = true
		b.certs = append(b.certs, id)
	}
}

// dispatch handles a batch: install.updated fetches the install config,
// cert.updated marks its certificate; then every marked certificate is
// installed once and, when files changed, after_update_script runs once.
func (a *Agent) dispatch(ctx context.Context, sigs []signal) (int, error) {
	cfg, err := a.savedInstallConfig()
	if err != nil {
		return 0, err
	}
	b := newBatch()
	event := ""
	for _, s := range sigs {
		var ref struct {
			CertID  flexInt `json:"cert_id"`
			Version flexInt `json:"version"`
		}
		json.Unmarshal(s.Ref, &ref)
		switch s.Type {
		case SignalInstallUpdated:
			if cfg != nil && ref.Version > 0 && int64(ref.Version) <= cfg.Version {
				a.printf("install config version %d already applied", ref.Version)
				continue
			}
			if cfg, err = a.fetchInstallConfig(ctx); err != nil {
				return 0, err
			}
			for _, id := range cfg.certIDs() {
				b.mark(id)
			}
			event = s.Type
		case SignalCertUpdated:
			b.mark(int64(ref.CertID))
			event = s.Type
		case SignalCertUnassigned:
			a.printf("certificate %d was unassigned; its files are left in place", ref.CertID)
		case SignalResync:
			a.printf("the server asks for a full resync")
			a.st.Cursor = ""
			if err := a.saveState(); err != nil {
				return 0, err
			}
			if cfg, err = a.fetchInstallConfig(ctx); err != nil {
				return 0, err
			}
			for _, id := range cfg.certIDs() {
				b.mark(id)
			}
			event = s.Type
		default:
			a.printf("ignored signal %s", s.Type)
		}
	}
	if cfg == nil {
		cfg = &installConfig{}
	}
	return a.runBatch(ctx, cfg, b, event)
}

// runBatch installs the batch's certificates and runs the script once
// when files changed.
func (a *Agent) runBatch(ctx context.Context, cfg *installConfig, b *batch, event string) (int, error) {
	changed := 0
	for _, id := range b.certs {
		n, err := a.installCert(ctx, cfg, id)
		changed += n
		if err != nil {
			return changed, err
		}
	}
	if changed > 0 {
		if err := a.runScript(ctx, cfg, event); err != nil {
			return changed, err
		}
	}
	return changed, nil
}

// Run polls until ctx ends: every interval (or the server's
// X-Poll-Interval), Retry-After on 429/503, backing off on errors.
func (a *Agent) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = 60 * time.Second
	}
	backoff := time.Duration(0)
	for {
		p, err := a.Updates(ctx)
		delay := interval
		if p.PollInterval > 0 {
			delay = p.PollInterval
		}
		var re *RetryError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &re):
			a.printf("%v", err)
			delay = max(interval, re.After)
			backoff = 0
		case err != nil:
			if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "run login") {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Second), min(60*time.Second, interval))
			delay = backoff
			a.printf("error: %v (retrying in %s)", err, delay)
		default:
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}
