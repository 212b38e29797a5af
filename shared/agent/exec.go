package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Bounds of a command's output in the agent's output.
const (
	maxCommandOutput = 64 << 10
	maxOutputLine    = 4 << 10
)

// execTimeout is an exec item's timeout when timeout_ms is not set.
const execTimeout = 30 * time.Second

// isExec reports whether the item is an exec item: enabled, with a
// non-empty cmd (whatever its type).
func (it installItem) isExec() bool {
	if !it.enabled() {
		return false
	}
	argv, err := it.argv()
	return err != nil || len(argv) > 0
}

// argv is the item's command: a cmd string runs with /bin/sh -c, an
// array is the argv itself; nil when cmd is absent or empty.
func (it installItem) argv() ([]string, error) {
	if len(it.Cmd) == 0 || string(it.Cmd) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(it.Cmd, &s) == nil {
		if strings.TrimSpace(s) == "" {
			return nil, nil
		}
		return []string{"/bin/sh", "-c", s}, nil
	}
	var argv []string
	if err := json.Unmarshal(it.Cmd, &argv); err != nil {
		return nil, fmt.Errorf("install item %q: cmd is neither a string nor an array of strings", it.ID)
	}
	if len(argv) == 0 {
		return nil, nil
	}
	if argv[0] == "" {
		return nil, fmt.Errorf("install item %q: cmd's first element is empty", it.ID)
	}
	return argv, nil
}

// applied is what one apply (a batch of signals, a resync) changed:
// exec items run from it.
type applied struct {
	// config is true when a new install config was saved.
	config bool
	// files is how many installed files changed (copy, import_ca items,
	// the trust directory).
	files int
	// cas are the CAs whose bundle, trust anchor or files changed.
	cas map[int64]bool
}

// runs reports whether the exec item runs after this apply: an item on
// a CA when the config or that CA (any CA for ob_id 0) changed, any
// other when anything changed.
func (ap applied) runs(it installItem) bool {
	if ap.config {
		return true
	}
	if it.ObType == "ca" {
		if it.ObID == 0 {
			return len(ap.cas) > 0
		}
		return ap.cas[int64(it.ObID)]
	}
	return ap.files > 0 || len(ap.cas) > 0
}

// runExecItems runs the config's exec items the apply calls for, in
// order, after its copies. Items on a certificate never run (a line says
// so: after_update_script is for certificates). A failing item stops the
// rest unless it has continue_on_error.
func (a *Agent) runExecItems(ctx context.Context, cfg *installConfig, ap applied, env []string) error {
	for _, it := range cfg.Installs {
		if !it.isExec() || !ap.runs(it) {
			continue
		}
		if it.ObType == "cert" {
			a.printf("exec item %q skipped: exec items on a certificate never run (use after_update_script)", it.ID)
			continue
		}
		if err := a.runExecItem(ctx, it, env); err != nil {
			if !it.ContinueOnError {
				return err
			}
			a.printf("%v (continue_on_error)", err)
			continue
		}
		a.printf("ran exec item %q", it.ID)
	}
	return nil
}

// runExecItem runs one exec item: its env (when set) replaces the
// agent's environment, env is added either way; timeout_ms bounds it.
func (a *Agent) runExecItem(ctx context.Context, it installItem, env []string) error {
	argv, err := it.argv()
	if err != nil {
		return err
	}
	if it.RunAs != "" {
		u, err := user.Current()
		if err != nil {
			return fmt.Errorf("exec item %q: run_as %q: %w", it.ID, it.RunAs, err)
		}
		if u.Username != it.RunAs && u.Uid != it.RunAs {
			return fmt.Errorf("exec item %q: run_as %q: the agent runs as %q and does not switch users", it.ID, it.RunAs, u.Username)
		}
	}
	timeout := execTimeout
	if it.TimeoutMs > 0 {
		timeout = time.Duration(it.TimeoutMs) * time.Millisecond
	}
	childEnv := os.Environ()
	if it.Env != nil {
		childEnv = childEnv[:0:0]
		for _, k := range slices.Sorted(maps.Keys(it.Env)) {
			childEnv = append(childEnv, k+"="+it.Env[k])
		}
	}
	return a.runCommand(ctx, fmt.Sprintf("exec item %q", it.ID), argv, append(childEnv, env...), timeout)
}

// commandEnv is what the apply adds to the environment of
// after_update_script and exec items: CERTCTRL_EVENT, and for each
// certificate whose bundle.pfx the apply wrote or checked
// CERTCTRL_PFX_PASSWORD_<cert id>, plus CERTCTRL_PFX_PASSWORD when there
// is exactly one.
func commandEnv(event string, pfx map[int64]string) []string {
	var env []string
	if event != "" {
		env = append(env, "CERTCTRL_EVENT="+event)
	}
	ids := slices.Sorted(maps.Keys(pfx))
	for _, id := range ids {
		env = append(env, "CERTCTRL_PFX_PASSWORD_"+strconv.FormatInt(id, 10)+"="+pfx[id])
	}
	if len(ids) == 1 {
		env = append(env, "CERTCTRL_PFX_PASSWORD="+pfx[ids[0]])
	}
	return env
}

// runCommand runs argv with env, its output printed line by line
// prefixed with label (at most maxCommandOutput bytes); at timeout its
// whole process group is killed.
func (a *Agent) runCommand(ctx context.Context, label string, argv, env []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	w := &outputWriter{a: a, prefix: label + ": "}
	cmd.Stdout, cmd.Stderr = w, w
	killGroup(cmd)
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	w.flush()
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s timed out after %s", label, timeout)
	default:
		return fmt.Errorf("%s failed: %v", label, err)
	}
}

// outputWriter prints a command's output as lines with a prefix, up to
// maxCommandOutput bytes, then one line saying the rest was dropped.
type outputWriter struct {
	a         *Agent
	prefix    string
	n         int
	line      []byte
	truncated bool
}

func (w *outputWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 && !w.truncated {
		if w.n >= maxCommandOutput {
			w.flush()
			w.a.printf("%s[output truncated after %d bytes]", w.prefix, maxCommandOutput)
			w.truncated = true
			break
		}
		chunk := p[:min(len(p), maxCommandOutput-w.n)]
		nl := bytes.IndexByte(chunk, '\n')
		if nl >= 0 {
			chunk = chunk[:nl+1]
		}
		w.n += len(chunk)
		p = p[len(chunk):]
		w.line = append(w.line, chunk...)
		if nl >= 0 || len(w.line) >= maxOutputLine {
			w.flush()
		}
	}
	return total, nil
}

// flush prints the pending partial line.
func (w *outputWriter) flush() {
	if len(w.line) > 0 {
		w.a.printf("%s%s", w.prefix, strings.TrimRight(string(w.line), "\r\n"))
		w.line = w.line[:0]
	}
}
