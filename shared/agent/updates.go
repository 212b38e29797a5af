package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Signal types the agent handles (§2.3).
const (
	SignalInstallUpdated = "install.updated"
	SignalCertUpdated    = "cert.updated"
	SignalCertUnassigned = "cert.unassigned"
	SignalCAAssigned     = "ca.assigned"
	SignalCAUnassigned   = "ca.unassigned"
	SignalResync         = "state.resync_required"
)

// MaxWait is the longest long poll, in seconds (Agent.Wait).
const MaxWait = 30

// Poll is the outcome of one Updates.
type Poll struct {
	// Signals is how many signals the poll returned.
	Signals int
	// Installed is how many installed files changed (copy and import_ca
	// items, the trust directory).
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
// notify first, once per Agent) and handles them. A first run (no
// cursor, no install config yet) starts with a full resync; CAs the
// server could not serve before are fetched again first.
func (a *Agent) Updates(ctx context.Context) (Poll, error) {
	if a.Wait < 0 || a.Wait > MaxWait {
		return Poll{}, fmt.Errorf("updates: wait must be 0..%d seconds, not %d", MaxWait, a.Wait)
	}
	if err := a.load(); err != nil {
		return Poll{}, err
	}
	if !a.notified {
		a.notify(ctx)
	}
	n := 0
	_, noConfig := os.Stat(a.path(configFile))
	switch {
	case a.st.Cursor == "" && errors.Is(noConfig, os.ErrNotExist):
		a.printf("first run: full resync")
		var err error
		if n, err = a.resync(ctx); err != nil {
			return Poll{Installed: n}, err
		}
	case len(a.st.PendingCAs) > 0:
		var err error
		if n, err = a.retryCAs(ctx); err != nil {
			a.printf("error: %v", err) // the poll goes on
		}
	}
	p, err := a.poll(ctx, true)
	p.Installed += n
	return p, err
}

// retryCAs fetches again the CAs the server could not serve before.
func (a *Agent) retryCAs(ctx context.Context) (int, error) {
	cfg, err := a.savedInstallConfig()
	if err != nil {
		return 0, err
	}
	if cfg == nil {
		cfg = &installConfig{}
	}
	b := newBatch()
	b.event = SignalCAAssigned
	for _, id := range a.st.PendingCAs {
		b.ca(caOp{id: id})
	}
	return a.runBatch(ctx, cfg, b)
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
	if a.Wait > 0 {
		q += "&wait=" + strconv.Itoa(a.Wait)
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

// resync fetches the install config and applies it in full: every
// certificate it copies, every CA (import_ca items, the CAs kept), exec
// items when something changed (a cursor gap, state.resync_required, a
// first run).
func (a *Agent) resync(ctx context.Context) (int, error) {
	cfg, changed, err := a.fetchInstallConfig(ctx)
	if err != nil {
		return 0, err
	}
	b := newBatch()
	b.full, b.config, b.event = true, changed, SignalResync
	for _, id := range cfg.certIDs() {
		b.mark(id)
	}
	return a.runBatch(ctx, cfg, b)
}

// batch is what one batch of signals asks for: certificates to install
// and CAs to import or remove, in order.
type batch struct {
	certs []int64
	seen  map[int64]bool
	cas   []caOp
	// full is a full resync: every CA too.
	full bool
	// config is true when a new install config was saved.
	config bool
	// event is the type of the last signal that asked for something:
	// after_update_script's $1.
	event string
}

func newBatch() *batch { return &batch{seen: map[int64]bool{}} }

func (b *batch) mark(id int64) {
	if id > 0 && !b.seen[id] {
		b.seen[id] = true
		b.certs = append(b.certs, id)
	}
}

// ca records what to do with a CA; a later signal for it wins.
func (b *batch) ca(op caOp) {
	if op.id <= 0 {
		return
	}
	b.cas = slices.DeleteFunc(b.cas, func(o caOp) bool { return o.id == op.id })
	b.cas = append(b.cas, op)
}

// dispatch handles a batch: install.updated fetches the install config,
// cert.updated marks its certificate, ca.assigned and ca.unassigned their
// CA; then the batch is applied once (runBatch).
func (a *Agent) dispatch(ctx context.Context, sigs []signal) (int, error) {
	cfg, err := a.savedInstallConfig()
	if err != nil {
		return 0, err
	}
	b := newBatch()
	for _, s := range sigs {
		var ref struct {
			CertID  flexInt `json:"cert_id"`
			CAID    flexInt `json:"ca_id"`
			Version flexInt `json:"version"`
		}
		json.Unmarshal(s.Ref, &ref)
		switch s.Type {
		case SignalInstallUpdated:
			if cfg != nil && ref.Version > 0 && int64(ref.Version) <= cfg.Version {
				a.printf("install config version %d already applied", ref.Version)
				continue
			}
			var changed bool
			if cfg, changed, err = a.fetchInstallConfig(ctx); err != nil {
				return 0, err
			}
			b.config = b.config || changed
			for _, id := range cfg.certIDs() {
				b.mark(id)
			}
			b.event = s.Type
		case SignalCertUpdated:
			b.mark(int64(ref.CertID))
			b.event = s.Type
		case SignalCertUnassigned:
			if err := a.forgetCert(int64(ref.CertID)); err != nil {
				return 0, err
			}
			a.printf("certificate %d was unassigned; its files are left in place", ref.CertID)
		case SignalCAAssigned, SignalCAUnassigned:
			if ref.CAID <= 0 {
				a.printf("ignored signal %s without a ca_id", s.Type)
				continue
			}
			b.ca(caOp{id: int64(ref.CAID), remove: s.Type == SignalCAUnassigned})
			b.event = s.Type
		case SignalResync:
			// The signal came in the stream, so the cursor after it is
			// good: keeping it (the real agent clears it and relies on
			// its de-duplication) avoids replaying the whole stream,
			// this signal included, on every poll.
			a.printf("the server asks for a full resync")
			var changed bool
			if cfg, changed, err = a.fetchInstallConfig(ctx); err != nil {
				return 0, err
			}
			b.full, b.config = true, b.config || changed
			for _, id := range cfg.certIDs() {
				b.mark(id)
			}
			b.event = s.Type
		default:
			a.printf("ignored signal %s", s.Type)
		}
	}
	if cfg == nil {
		cfg = &installConfig{}
	}
	return a.runBatch(ctx, cfg, b)
}

// runBatch applies a batch: it installs its certificates, imports or
// removes its CAs, runs the exec items the changes call for and, when
// files or CAs changed, after_update_script once. It returns how many
// files changed.
func (a *Agent) runBatch(ctx context.Context, cfg *installConfig, b *batch) (int, error) {
	ap := applied{config: b.config, cas: map[int64]bool{}}
	pfx := map[int64]string{}
	for _, id := range b.certs {
		n, pw, err := a.installCert(ctx, cfg, id)
		ap.files += n
		if pw != "" {
			pfx[id] = pw
		}
		if err != nil {
			return ap.files, err
		}
	}
	if err := a.applyCAs(ctx, cfg, b, &ap); err != nil {
		return ap.files, err
	}
	env := commandEnv(b.event, pfx)
	if err := a.runExecItems(ctx, cfg, ap, env); err != nil {
		return ap.files, err
	}
	if ap.files > 0 || len(ap.cas) > 0 {
		if err := a.runScript(ctx, cfg, b.event, env); err != nil {
			return ap.files, err
		}
	}
	return ap.files, nil
}

// Run polls until ctx ends: every interval (or the server's
// X-Poll-Interval) after each poll, which Wait may hold, Retry-After on
// 429/503, backing off on errors.
func (a *Agent) Run(ctx context.Context, interval time.Duration) error {
	if a.Wait < 0 || a.Wait > MaxWait {
		return fmt.Errorf("run: wait must be 0..%d seconds, not %d", MaxWait, a.Wait)
	}
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
