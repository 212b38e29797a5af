package devices

// Install configs (cert-ctrl device protocol §4.2, §4.4) and the agent's
// version notify (§4.3).
//
// Store layout (table Table, partition user#<user>, beside the device):
//
//	install#<019d device>               the device's current install config
//	install#<019d device>#v#<019d ver>  the config as it was at version ver
//	agentver#<019d device>              the agent version the device reported
//
// Install config ids come from the counter meta/counter/install_configs.
// Every change writes the current config and its history item in one
// transaction, conditional on the current config's stored version (and on
// the device still existing), so concurrent writers never share a version
// number; only then is install.updated signalled.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// Install item types.
const (
	InstallCopy     = "copy"
	InstallExec     = "exec"
	InstallImportCA = "import_ca"
)

// Object types an install item refers to (its ob_type).
const (
	InstallObCert = "cert"
	InstallObCA   = "ca"
)

// Limits of an install config.
const (
	MaxInstallItems        = 100
	MaxAfterUpdateScript   = 64 << 10
	MaxInstallTimeoutMS    = 24 * 60 * 60 * 1000
	DefaultInstallTimeout  = 30000
	MaxInstallHistoryLimit = 100
	// DefaultInstallHistoryLimit is the history page when limit is 0.
	DefaultInstallHistoryLimit = 20
)

// NotifySchema is the schema of the agent's notify body (protocol §4.3).
const NotifySchema = "certctrl.device.notify.v1"

// NotifyAgentVersion is the notify event that reports the agent's version.
const NotifyAgentVersion = "agent_version"

// InstallCmd is an exec item's command: a shell string (run with /bin/sh
// -c or cmd.exe /C), or an argv. In JSON it is a string or an array of
// strings (the agent reads "cmd" only; it never reads "cmd_argv").
type InstallCmd struct {
	Shell string
	Argv  []string
}

// IsZero reports whether there is no command.
func (c InstallCmd) IsZero() bool { return c.Shell == "" && len(c.Argv) == 0 }

// MarshalJSON writes the argv as an array when there is one, else the
// shell string.
func (c InstallCmd) MarshalJSON() ([]byte, error) {
	if len(c.Argv) > 0 {
		return json.Marshal(c.Argv)
	}
	return json.Marshal(c.Shell)
}

// UnmarshalJSON reads a string, an array of strings, or null.
func (c *InstallCmd) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*c = InstallCmd{}
	switch {
	case string(b) == "null":
		return nil
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &c.Shell)
	case len(b) > 0 && b[0] == '[':
		return json.Unmarshal(b, &c.Argv)
	}
	return errors.New("cmd must be a string or an array of strings")
}

// InstallItem is one step of an install config, with the field names and
// types the agent parses (protocol §4.2). Enabled nil means true; stored
// and returned items always carry it.
type InstallItem struct {
	ID              string            `json:"id"`
	Type            string            `json:"type"`
	Enabled         *bool             `json:"enabled,omitempty"`
	ContinueOnError bool              `json:"continue_on_error"`
	DependsOn       []string          `json:"depends_on,omitempty"`
	Tags            []string          `json:"tags,omitempty"`
	ObType          string            `json:"ob_type,omitempty"`
	ObID            int64             `json:"ob_id,omitempty"`
	ObName          string            `json:"ob_name,omitempty"`
	From            []string          `json:"from,omitempty"`
	To              []string          `json:"to,omitempty"`
	Cmd             InstallCmd        `json:"cmd,omitzero"`
	TimeoutMS       int64             `json:"timeout_ms,omitempty"`
	RunAs           string            `json:"run_as,omitempty"`
	Env             map[string]string `json:"env,omitempty"`
	Verify          json.RawMessage   `json:"verify,omitempty"`
}

// IsEnabled reports whether the agent runs the item (absent means yes).
func (it InstallItem) IsEnabled() bool { return it.Enabled == nil || *it.Enabled }

// InstallConfig is a device's install config at one version. Version 0
// with ID 0 is the empty config of a device that never had one.
// CreatedAt and UpdatedAt are Unix seconds in JSON.
type InstallConfig struct {
	ID           int64
	UserDeviceID int64
	Version      int64
	Installs     []InstallItem
	// InstallsHash is the standard base64 of the SHA-256 of the canonical
	// JSON of Installs (InstallsHash), which install.updated repeats.
	InstallsHash      string
	AfterUpdateScript *string
	UpdatedBy         string
	// RestoredFrom is the version a restore copied, else 0.
	RestoredFrom int64
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// installConfigJSON is InstallConfig's JSON: the DTO's names, seconds.
type installConfigJSON struct {
	ID                int64         `json:"id"`
	UserDeviceID      int64         `json:"user_device_id"`
	Version           int64         `json:"version"`
	Installs          []InstallItem `json:"installs"`
	InstallsHash      string        `json:"installs_hash"`
	AfterUpdateScript *string       `json:"after_update_script"`
	UpdatedBy         string        `json:"updated_by,omitempty"`
	RestoredFrom      int64         `json:"restored_from,omitempty"`
	CreatedAt         int64         `json:"created_at"`
	UpdatedAt         int64         `json:"updated_at"`
}

func installUnix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func installTime(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

// MarshalJSON writes the config as the device DTO (times in Unix seconds).
func (c InstallConfig) MarshalJSON() ([]byte, error) {
	installs := c.Installs
	if installs == nil {
		installs = []InstallItem{}
	}
	return json.Marshal(installConfigJSON{ID: c.ID, UserDeviceID: c.UserDeviceID, Version: c.Version, Installs: installs,
		InstallsHash: c.InstallsHash, AfterUpdateScript: c.AfterUpdateScript, UpdatedBy: c.UpdatedBy,
		RestoredFrom: c.RestoredFrom, CreatedAt: installUnix(c.CreatedAt), UpdatedAt: installUnix(c.UpdatedAt)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (c *InstallConfig) UnmarshalJSON(b []byte) error {
	var j installConfigJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = InstallConfig{ID: j.ID, UserDeviceID: j.UserDeviceID, Version: j.Version, Installs: j.Installs,
		InstallsHash: j.InstallsHash, AfterUpdateScript: j.AfterUpdateScript, UpdatedBy: j.UpdatedBy,
		RestoredFrom: j.RestoredFrom, CreatedAt: installTime(j.CreatedAt), UpdatedAt: installTime(j.UpdatedAt)}
	if c.Installs == nil {
		c.Installs = []InstallItem{}
	}
	return nil
}

// InstallsHash is the standard base64 of the SHA-256 of the installs'
// canonical JSON (normalized as stored: enabled set, env keys sorted,
// verify compacted with sorted keys; nil is []).
func InstallsHash(installs []InstallItem) string {
	b, err := installCanonical(installs)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func installCanonical(installs []InstallItem) ([]byte, error) {
	norm := make([]InstallItem, len(installs))
	for i, it := range installs {
		norm[i] = installNormalize(it)
	}
	return json.Marshal(norm)
}

// installNormalize returns the item as it is stored: enabled explicit,
// empty lists and maps absent, verify in canonical JSON.
func installNormalize(it InstallItem) InstallItem {
	enabled := it.IsEnabled()
	it.Enabled = &enabled
	if len(it.DependsOn) == 0 {
		it.DependsOn = nil
	}
	if len(it.Tags) == 0 {
		it.Tags = nil
	}
	if len(it.From) == 0 {
		it.From = nil
	}
	if len(it.To) == 0 {
		it.To = nil
	}
	if len(it.Cmd.Argv) > 0 {
		it.Cmd.Shell = ""
	} else {
		it.Cmd.Argv = nil
	}
	if len(it.Env) == 0 {
		it.Env = nil
	}
	if v := bytes.TrimSpace(it.Verify); len(v) == 0 || string(v) == "null" {
		it.Verify = nil
	} else if c, err := installCanonicalJSON(v); err == nil {
		it.Verify = c
	}
	return it
}

// installCanonicalJSON re-encodes a JSON value with object keys sorted
// and numbers kept as written.
func installCanonicalJSON(raw []byte) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// Virtual file names a copy item may name in from, per ob_type.
var installFromNames = map[string][]string{
	InstallObCert: {"private.key", "certificate.pem", "chain.pem", "fullchain.pem", "certificate.der", "bundle.pfx", "meta.json"},
	InstallObCA:   {"ca.pem", "ca.der", "meta.json"},
}

var installWindowsAbs = regexp.MustCompile(`^[A-Za-z]:[\\/]`)

// installAbsPath reports whether p is an absolute path on the agent's
// platforms: POSIX (/...), Windows drive (C:\ or C:/) or UNC (\\host\...).
func installAbsPath(p string) bool {
	return strings.HasPrefix(p, "/") || installWindowsAbs.MatchString(p) || strings.HasPrefix(p, `\\`)
}

// Bounds of an item's fields.
const (
	installMaxText  = 256
	installMaxPath  = 4096
	installMaxList  = 32
	installMaxCmd   = 16 << 10
	installMaxEnv   = 100
	installMaxBytes = 256 << 10
)

func installText(field, v string, max int) error {
	if len(v) > max || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
		return apperr.InvalidField(field, "must be valid text of at most %d bytes", max)
	}
	return nil
}

func installList(field string, vs []string, maxLen, maxEach int) error {
	if len(vs) > maxLen {
		return apperr.InvalidField(field, "has at most %d entries", maxLen)
	}
	for j, v := range vs {
		if err := installText(fmt.Sprintf("%s[%d]", field, j), v, maxEach); err != nil {
			return err
		}
	}
	return nil
}

// ValidateInstalls checks an install config's items and script. Errors:
// Invalid naming the field, e.g. "installs[2].to".
func ValidateInstalls(installs []InstallItem, afterUpdateScript *string) error {
	if len(installs) > MaxInstallItems {
		return apperr.InvalidField("installs", "at most %d items", MaxInstallItems)
	}
	ids := map[string]int{}
	for i, it := range installs {
		if err := installValidateItem(fmt.Sprintf("installs[%d]", i), it); err != nil {
			return err
		}
		if it.ID != "" {
			if j, dup := ids[it.ID]; dup {
				return apperr.InvalidField(fmt.Sprintf("installs[%d].id", i), "%q is already the id of installs[%d]", it.ID, j)
			}
			ids[it.ID] = i
		}
	}
	if s := afterUpdateScript; s != nil {
		if len(*s) > MaxAfterUpdateScript || !utf8.ValidString(*s) || strings.ContainsRune(*s, 0) {
			return apperr.InvalidField("after_update_script", "must be text of at most %d bytes", MaxAfterUpdateScript)
		}
	}
	b, err := installCanonical(installs)
	if err != nil {
		return apperr.InvalidField("installs", "cannot be encoded: %v", err)
	}
	if len(b) > installMaxBytes {
		return apperr.InvalidField("installs", "encode to at most %d bytes", installMaxBytes)
	}
	return nil
}

func installValidateItem(f string, it InstallItem) error {
	if err := installText(f+".id", it.ID, installMaxText); err != nil {
		return err
	}
	if err := installText(f+".ob_name", it.ObName, installMaxText); err != nil {
		return err
	}
	if err := installList(f+".depends_on", it.DependsOn, installMaxList, installMaxText); err != nil {
		return err
	}
	if err := installList(f+".tags", it.Tags, installMaxList, installMaxText); err != nil {
		return err
	}
	switch it.ObType {
	case "", InstallObCert, InstallObCA:
	default:
		return apperr.InvalidField(f+".ob_type", `must be "cert" or "ca", not %q`, it.ObType)
	}
	switch it.Type {
	case InstallCopy, InstallImportCA:
		if it.ObType == "" {
			return apperr.InvalidField(f+".ob_type", `is required for a %s item: "cert" or "ca"`, it.Type)
		}
		if it.Type == InstallImportCA && it.ObType != InstallObCA {
			return apperr.InvalidField(f+".ob_type", `must be "ca" for an import_ca item`)
		}
		if it.ObID <= 0 {
			return apperr.InvalidField(f+".ob_id", "is required for a %s item: the %s's id", it.Type, it.ObType)
		}
		if !it.Cmd.IsZero() {
			return apperr.InvalidField(f+".cmd", "only exec items run a command (use after_update_script)")
		}
	case InstallExec:
		if it.ObType == InstallObCert {
			return apperr.InvalidField(f+".ob_type", `exec items with ob_type "cert" are never run by the agent; use after_update_script`)
		}
		if it.Cmd.IsZero() {
			return apperr.InvalidField(f+".cmd", "is required for an exec item: a string or an argv array")
		}
	case "":
		return apperr.InvalidField(f+".type", "is required: copy, exec or import_ca")
	default:
		return apperr.InvalidField(f+".type", "must be copy, exec or import_ca, not %q", it.Type)
	}
	if it.ObID < 0 || (it.ObType == "" && it.ObID != 0) {
		return apperr.InvalidField(f+".ob_id", "must be the positive id of the item's ob_type object")
	}
	if len(it.From) != len(it.To) {
		return apperr.InvalidField(f+".to", "must have as many entries as from (%d, not %d)", len(it.From), len(it.To))
	}
	if len(it.From) > installMaxList {
		return apperr.InvalidField(f+".from", "has at most %d entries", installMaxList)
	}
	if len(it.From) > 0 && it.ObType == "" {
		return apperr.InvalidField(f+".ob_type", `is required with from: "cert" or "ca"`)
	}
	for j, name := range it.From {
		if !slices.Contains(installFromNames[it.ObType], name) {
			return apperr.InvalidField(fmt.Sprintf("%s.from[%d]", f, j), "%q is not a %s file: one of %s",
				name, it.ObType, strings.Join(installFromNames[it.ObType], ", "))
		}
	}
	for j, p := range it.To {
		field := fmt.Sprintf("%s.to[%d]", f, j)
		if err := installText(field, p, installMaxPath); err != nil {
			return err
		}
		if p != "" && (!installAbsPath(p) || strings.ContainsAny(p, "\r\n")) {
			return apperr.InvalidField(field, `must be an absolute path, or "" to skip that file`)
		}
	}
	if err := installText(f+".cmd", it.Cmd.Shell, installMaxCmd); err != nil {
		return err
	}
	if len(it.Cmd.Argv) > 0 {
		if it.Cmd.Argv[0] == "" {
			return apperr.InvalidField(f+".cmd[0]", "is the program and must not be empty")
		}
		if err := installList(f+".cmd", it.Cmd.Argv, 256, installMaxCmd); err != nil {
			return err
		}
	}
	if it.TimeoutMS < 0 || it.TimeoutMS > MaxInstallTimeoutMS {
		return apperr.InvalidField(f+".timeout_ms", "must be from 1 to %d milliseconds (absent: %d)", MaxInstallTimeoutMS, DefaultInstallTimeout)
	}
	if err := installText(f+".run_as", it.RunAs, installMaxText); err != nil {
		return err
	}
	if strings.ContainsAny(it.RunAs, " \t\r\n") {
		return apperr.InvalidField(f+".run_as", "must be a user name without spaces")
	}
	if len(it.Env) > installMaxEnv {
		return apperr.InvalidField(f+".env", "has at most %d variables", installMaxEnv)
	}
	for k, v := range it.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || len(k) > installMaxText || !utf8.ValidString(k) {
			return apperr.InvalidField(f+".env", "variable name %q must be non-empty text without '='", k)
		}
		if err := installText(f+".env."+k, v, installMaxCmd); err != nil {
			return err
		}
	}
	if v := bytes.TrimSpace(it.Verify); len(v) > 0 && string(v) != "null" {
		if v[0] != '{' || !json.Valid(v) {
			return apperr.InvalidField(f+".verify", "must be an object")
		}
	}
	return nil
}

// InstallConfigsConfig tunes the install config service.
type InstallConfigsConfig struct {
	Now func() time.Time
	Log *slog.Logger
}

// InstallConfigs keeps devices' install configs and the agent versions
// they report. Safe for concurrent use.
type InstallConfigs struct {
	installStore   store.Store
	installDevices *Service
	installSignal  Signaler
	installCfg     InstallConfigsConfig
}

// NewInstallConfigs returns the service over st; devs tells which devices
// exist, sig carries install.updated to them.
func NewInstallConfigs(st store.Store, devs *Service, sig Signaler, cfg InstallConfigsConfig) *InstallConfigs {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &InstallConfigs{installStore: st, installDevices: devs, installSignal: sig, installCfg: cfg}
}

type installActorKey struct{}

// ContextWithUpdatedBy returns ctx naming who makes install config
// changes; RestoreInstallConfig and PatchInstallConfig record it as
// updated_by (and PutInstallConfig when its updatedBy is "").
func ContextWithUpdatedBy(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, installActorKey{}, who)
}

func installActor(ctx context.Context, fallback string) string {
	if fallback != "" {
		return fallback
	}
	who, _ := ctx.Value(installActorKey{}).(string)
	return who
}

func installCurrentKey(userID, deviceID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: fmt.Sprintf("install#%019d", deviceID)}
}

func installHistoryPrefix(deviceID int64) string { return fmt.Sprintf("install#%019d#v#", deviceID) }

func installHistoryKey(userID, deviceID, version int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: installHistoryPrefix(deviceID) + fmt.Sprintf("%019d", version)}
}

func notifyAgentKey(userID, deviceID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: fmt.Sprintf("agentver#%019d", deviceID)}
}

// ForgetDevice deletes a deleted device's install config, its history
// and its reported agent version. Errors are transient (a retry is
// safe).
func (s *InstallConfigs) ForgetDevice(ctx context.Context, userID, deviceID int64) error {
	versions, err := idsUnder(ctx, s.installStore, userID, installHistoryPrefix(deviceID))
	if err != nil {
		return err
	}
	keys := []store.Key{installCurrentKey(userID, deviceID), notifyAgentKey(userID, deviceID)}
	for _, v := range versions {
		keys = append(keys, installHistoryKey(userID, deviceID, v))
	}
	for _, k := range keys {
		if err := s.installStore.Delete(ctx, k, store.Always); err != nil {
			return fmt.Errorf("devices: forget the install config of device %d: %w", deviceID, err)
		}
	}
	return nil
}

func (s *InstallConfigs) installNow() time.Time {
	return s.installCfg.Now().UTC().Truncate(time.Second)
}

// installRead returns the device's current config and the store version
// of its item (0 when there is none: then the empty config).
func (s *InstallConfigs) installRead(ctx context.Context, userID, deviceID int64) (InstallConfig, int64, error) {
	var c InstallConfig
	it, err := store.GetJSON(ctx, s.installStore, installCurrentKey(userID, deviceID), &c)
	if errors.Is(err, store.ErrNotFound) {
		return InstallConfig{UserDeviceID: deviceID, Installs: []InstallItem{}, InstallsHash: InstallsHash(nil)}, 0, nil
	}
	if err != nil {
		return InstallConfig{}, 0, fmt.Errorf("devices: read install config of device %d: %w", deviceID, err)
	}
	return c, it.Version, nil
}

// GetInstallConfig returns the device's current install config: the empty
// version-0 config (id 0, no installs) when it never had one. Errors:
// NotFound for a device the user does not have.
func (s *InstallConfigs) GetInstallConfig(ctx context.Context, userID, deviceID int64) (InstallConfig, error) {
	if _, err := s.installDevices.Get(ctx, userID, deviceID); err != nil {
		return InstallConfig{}, err
	}
	c, _, err := s.installRead(ctx, userID, deviceID)
	return c, err
}

// installChangeAttempts bounds the retries of a change that lost a race
// with another writer of the same config.
const installChangeAttempts = 32

// installChange applies change to the current config and stores the
// result as the next version, retrying on concurrent writers; then it
// signals install.updated. change returns the new installs and script
// (already validated) from the current config.
func (s *InstallConfigs) installChange(ctx context.Context, userID, deviceID int64, updatedBy string,
	change func(cur InstallConfig) (InstallConfig, error)) (InstallConfig, error) {
	if _, err := s.installDevices.Get(ctx, userID, deviceID); err != nil {
		return InstallConfig{}, err
	}
	var newID int64 // allocated once, for a config that does not exist yet
	for range installChangeAttempts {
		cur, storeVersion, err := s.installRead(ctx, userID, deviceID)
		if err != nil {
			return InstallConfig{}, err
		}
		next, err := change(cur)
		if err != nil {
			return InstallConfig{}, err
		}
		if err := ValidateInstalls(next.Installs, next.AfterUpdateScript); err != nil {
			return InstallConfig{}, err
		}
		now := s.installNow()
		next.ID, next.UserDeviceID, next.Version = cur.ID, deviceID, cur.Version+1
		next.CreatedAt, next.UpdatedAt, next.UpdatedBy = cur.CreatedAt, now, updatedBy
		next.Installs = slices.Clone(next.Installs)
		for i := range next.Installs {
			next.Installs[i] = installNormalize(next.Installs[i])
		}
		if next.Installs == nil {
			next.Installs = []InstallItem{}
		}
		if next.AfterUpdateScript != nil && *next.AfterUpdateScript == "" {
			next.AfterUpdateScript = nil
		}
		next.InstallsHash = InstallsHash(next.Installs)
		cond := store.IfVersion(storeVersion)
		if storeVersion == 0 {
			cond = store.IfAbsent
			next.CreatedAt = now
			if newID == 0 {
				id, err := s.installStore.Increment(ctx, store.Key{Table: CounterTable, PK: "counter", SK: "install_configs"}, 1, time.Time{})
				if err != nil {
					return InstallConfig{}, fmt.Errorf("devices: next install config id: %w", err)
				}
				newID = id
			}
			next.ID = newID
		}
		current, err := store.JSONItem(installCurrentKey(userID, deviceID), next)
		if err != nil {
			return InstallConfig{}, err
		}
		hist := current
		hist.Key = installHistoryKey(userID, deviceID, next.Version)
		err = s.installStore.Transact(ctx, []store.Write{
			store.CheckWrite(deviceKey(userID, deviceID), store.IfExists),
			store.PutWrite(current, cond),
			store.PutWrite(hist, store.IfAbsent),
		})
		var txErr *store.TxError
		switch {
		case err == nil:
			return next, s.installSignalChange(ctx, userID, next)
		case errors.As(err, &txErr) && txErr.Index == 0:
			return InstallConfig{}, apperr.New(apperr.NotFound, "device %d not found", deviceID)
		case errors.Is(err, store.ErrConditionFailed):
			continue // another writer took this version: start again from its config
		default:
			return InstallConfig{}, fmt.Errorf("devices: store install config of device %d: %w", deviceID, err)
		}
	}
	return InstallConfig{}, apperr.New(apperr.Conflict, "the install config of device %d is being changed concurrently; try again", deviceID)
}

// installSignalChange tells the device its config changed, after the
// change is stored (GET already returns it).
func (s *InstallConfigs) installSignalChange(ctx context.Context, userID int64, c InstallConfig) error {
	ref := map[string]any{"config_id": c.ID, "version": c.Version, "installs_hash_b64": c.InstallsHash}
	if err := s.installSignal.Signal(context.WithoutCancel(ctx), userID, c.UserDeviceID, SignalInstallUpdated, ref); err != nil {
		return fmt.Errorf("devices: install config version %d of device %d saved, but signalling the device failed: %w",
			c.Version, c.UserDeviceID, err)
	}
	return nil
}

// PutInstallConfig replaces the device's install config with installs
// and afterUpdateScript (nil or "" for none) as its next version, and
// signals install.updated. Errors: NotFound; Invalid naming the field;
// Conflict when concurrent changes keep winning.
func (s *InstallConfigs) PutInstallConfig(ctx context.Context, userID, deviceID int64, installs []InstallItem,
	afterUpdateScript *string, updatedBy string) (InstallConfig, error) {
	if err := ValidateInstalls(installs, afterUpdateScript); err != nil {
		return InstallConfig{}, err
	}
	return s.installChange(ctx, userID, deviceID, installActor(ctx, updatedBy), func(InstallConfig) (InstallConfig, error) {
		return InstallConfig{Installs: installs, AfterUpdateScript: afterUpdateScript}, nil
	})
}

// RestoreInstallConfig makes an earlier version's installs and script
// current again as a new version, and signals install.updated. Errors:
// NotFound (device or version); Invalid for a version below 1.
func (s *InstallConfigs) RestoreInstallConfig(ctx context.Context, userID, deviceID, version int64) (InstallConfig, error) {
	if version < 1 {
		return InstallConfig{}, apperr.InvalidField("version", "must be a version of the install config, from 1")
	}
	if _, err := s.installDevices.Get(ctx, userID, deviceID); err != nil {
		return InstallConfig{}, err
	}
	var old InstallConfig
	_, err := store.GetJSON(ctx, s.installStore, installHistoryKey(userID, deviceID, version), &old)
	if errors.Is(err, store.ErrNotFound) {
		return InstallConfig{}, apperr.New(apperr.NotFound, "install config version %d of device %d not found", version, deviceID)
	}
	if err != nil {
		return InstallConfig{}, fmt.Errorf("devices: read install config version %d: %w", version, err)
	}
	return s.installChange(ctx, userID, deviceID, installActor(ctx, ""), func(InstallConfig) (InstallConfig, error) {
		return InstallConfig{Installs: old.Installs, AfterUpdateScript: old.AfterUpdateScript, RestoredFrom: version}, nil
	})
}

// InstallConfigHistory returns the device's install config versions,
// newest first, at most limit (0: DefaultInstallHistoryLimit, at most
// MaxInstallHistoryLimit). Errors: NotFound.
func (s *InstallConfigs) InstallConfigHistory(ctx context.Context, userID, deviceID int64, limit int) ([]InstallConfig, error) {
	if limit <= 0 {
		limit = DefaultInstallHistoryLimit
	}
	limit = min(limit, MaxInstallHistoryLimit)
	if _, err := s.installDevices.Get(ctx, userID, deviceID); err != nil {
		return nil, err
	}
	q := store.Query{Table: Table, PK: userPK(userID), SKPrefix: installHistoryPrefix(deviceID), Reverse: true, Limit: limit}
	out := []InstallConfig{}
	for len(out) < limit {
		page, err := s.installStore.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("devices: install config history of device %d: %w", deviceID, err)
		}
		list, err := store.DecodeEach(page.Items, func(c InstallConfig) InstallConfig { return c })
		if err != nil {
			return nil, err
		}
		out = append(out, list...)
		if q.Cursor = page.Cursor; q.Cursor == "" {
			break
		}
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// InstallPatch changes the install items it matches (protocol §4.4): items
// with its ObType and ObID, and its ID when it has one. Only the keys the
// patch carries are applied; any other key of the JSON is ignored.
type InstallPatch struct {
	ObType string
	ObID   int64
	ID     string

	Type       *string
	Enabled    *bool
	SetCmd     bool // the patch carries cmd (null clears it)
	Cmd        InstallCmd
	SetArgv    bool // the patch carries cmd_argv: it becomes cmd as an array
	CmdArgv    []string
	SetTimeout bool // the patch carries timeout_ms (null: the default)
	TimeoutMS  int64
	SetEnv     bool // the patch carries env (null clears it)
	Env        map[string]string
}

// UnmarshalJSON reads one patch object: ob_type, ob_id, id to match; type,
// enabled, cmd, cmd_argv, timeout_ms, env to apply; other keys ignored.
// Values of the wrong type are errors naming the key.
func (p *InstallPatch) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return errors.New("a patch must be an object")
	}
	*p = InstallPatch{}
	get := func(key string, dst any) (bool, error) {
		raw, ok := m[key]
		if !ok {
			return false, nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return true, fmt.Errorf("%s: %w", key, err)
		}
		return true, nil
	}
	var err error
	for _, f := range []struct {
		key string
		dst any
		set *bool
	}{
		{"ob_type", &p.ObType, nil}, {"ob_id", &p.ObID, nil}, {"id", &p.ID, nil},
		{"type", &p.Type, nil}, {"enabled", &p.Enabled, nil},
		{"cmd", &p.Cmd, &p.SetCmd}, {"cmd_argv", &p.CmdArgv, &p.SetArgv},
		{"timeout_ms", &p.TimeoutMS, &p.SetTimeout}, {"env", &p.Env, &p.SetEnv},
	} {
		var ok bool
		if ok, err = get(f.key, f.dst); err != nil {
			return err
		}
		if f.set != nil {
			*f.set = ok
		}
	}
	return nil
}

// installPatchItem applies p to it.
func installPatchItem(it InstallItem, p InstallPatch) InstallItem {
	if p.Type != nil {
		it.Type = *p.Type
	}
	if p.Enabled != nil {
		enabled := *p.Enabled
		it.Enabled = &enabled
	}
	if p.SetCmd {
		it.Cmd = InstallCmd{Shell: p.Cmd.Shell, Argv: slices.Clone(p.Cmd.Argv)}
	}
	if p.SetArgv {
		it.Cmd = InstallCmd{Argv: slices.Clone(p.CmdArgv)}
	}
	if p.SetTimeout {
		it.TimeoutMS = p.TimeoutMS
	}
	if p.SetEnv {
		it.Env = nil
		if len(p.Env) > 0 {
			it.Env = make(map[string]string, len(p.Env))
			for k, v := range p.Env {
				it.Env[k] = v
			}
		}
	}
	return it
}

// PatchInstallConfig applies patches to the device's current install
// items (protocol §4.4) and, when afterUpdateScript is not nil, sets the
// script ("" removes it), storing the result as the next version and
// signalling install.updated. Every patch must match at least one item.
// A patch of ob_type cert never carries cmd or cmd_argv. Errors:
// NotFound; Invalid naming the field ("patches[1].ob_id",
// "installs[0].timeout_ms"); Conflict.
func (s *InstallConfigs) PatchInstallConfig(ctx context.Context, userID, deviceID int64, patches []InstallPatch,
	afterUpdateScript *string) (InstallConfig, error) {
	if len(patches) == 0 && afterUpdateScript == nil {
		return InstallConfig{}, apperr.InvalidField("patches", "send at least one patch or an after_update_script")
	}
	if len(patches) > MaxInstallItems {
		return InstallConfig{}, apperr.InvalidField("patches", "at most %d patches", MaxInstallItems)
	}
	for i, p := range patches {
		f := fmt.Sprintf("patches[%d]", i)
		if p.ObType != InstallObCert && p.ObType != InstallObCA {
			return InstallConfig{}, apperr.InvalidField(f+".ob_type", `is required: "cert" or "ca"`)
		}
		if p.ObID <= 0 {
			return InstallConfig{}, apperr.InvalidField(f+".ob_id", "is required: the positive id of the %s", p.ObType)
		}
		if p.ObType == InstallObCert && (p.SetCmd || p.SetArgv) {
			return InstallConfig{}, apperr.InvalidField(f+".cmd", "a cert item never runs a command; use after_update_script")
		}
	}
	return s.installChange(ctx, userID, deviceID, installActor(ctx, ""), func(cur InstallConfig) (InstallConfig, error) {
		installs := slices.Clone(cur.Installs)
		for i, p := range patches {
			matched := false
			for j, it := range installs {
				if it.ObType == p.ObType && it.ObID == p.ObID && (p.ID == "" || it.ID == p.ID) {
					installs[j], matched = installPatchItem(it, p), true
				}
			}
			if !matched {
				what := fmt.Sprintf("%s %d", p.ObType, p.ObID)
				if p.ID != "" {
					what += fmt.Sprintf(" with id %q", p.ID)
				}
				return InstallConfig{}, apperr.InvalidField(fmt.Sprintf("patches[%d]", i), "matches no install item (%s)", what)
			}
		}
		script := cur.AfterUpdateScript
		if afterUpdateScript != nil {
			script = afterUpdateScript
		}
		return InstallConfig{Installs: installs, AfterUpdateScript: script}, nil
	})
}

// NotifyEvent is one event of the agent's notify (protocol §4.3). Agent,
// Version and DevicePublicID are what an agent_version event carries.
type NotifyEvent struct {
	Type           string `json:"type"`
	Agent          string `json:"agent,omitempty"`
	Version        string `json:"version,omitempty"`
	DevicePublicID string `json:"device_public_id,omitempty"`
}

// ParseNotify reads a notify body: {"schema":"certctrl.device.notify.v1"
// (or absent), "events":[{"type":...},...]}. Errors: Invalid naming the
// field ("schema", "events", "events[1].type").
func ParseNotify(body []byte) (schema string, events []NotifyEvent, err error) {
	var req map[string]json.RawMessage
	if json.Unmarshal(body, &req) != nil || req == nil {
		return "", nil, apperr.InvalidField("events", `the body must be an object {"schema":%q,"events":[...]}`, NotifySchema)
	}
	if raw, ok := req["schema"]; ok && string(bytes.TrimSpace(raw)) != "null" {
		if json.Unmarshal(raw, &schema) != nil || (schema != "" && schema != NotifySchema) {
			return "", nil, apperr.InvalidField("schema", "must be %q", NotifySchema)
		}
	}
	var raws []json.RawMessage
	if json.Unmarshal(req["events"], &raws) != nil || len(raws) == 0 {
		return "", nil, apperr.InvalidField("events", "is required: a non-empty array of event objects")
	}
	if len(raws) > notifyMaxEvents {
		return "", nil, apperr.InvalidField("events", "at most %d events", notifyMaxEvents)
	}
	for i, raw := range raws {
		var fields map[string]json.RawMessage
		if json.Unmarshal(raw, &fields) != nil || fields == nil {
			return "", nil, apperr.InvalidField(fmt.Sprintf("events[%d]", i), "must be an object with a string type")
		}
		var e NotifyEvent
		if json.Unmarshal(fields["type"], &e.Type) != nil {
			return "", nil, apperr.InvalidField(fmt.Sprintf("events[%d].type", i), "is required: a string")
		}
		for key, dst := range map[string]*string{"agent": &e.Agent, "version": &e.Version, "device_public_id": &e.DevicePublicID} {
			if raw, ok := fields[key]; ok && json.Unmarshal(raw, dst) != nil {
				if e.Type == NotifyAgentVersion {
					return "", nil, apperr.InvalidField(fmt.Sprintf("events[%d].%s", i, key), "must be a string")
				}
				*dst = ""
			}
		}
		events = append(events, e)
	}
	return schema, events, nil
}

const (
	notifyMaxEvents  = 100
	notifyMaxVersion = 64
)

// AgentInfo is what a device's agent last reported about itself.
type AgentInfo struct {
	Agent          string    `json:"agent"`
	Version        string    `json:"version"`
	DevicePublicID string    `json:"device_public_id,omitempty"`
	ReportedAt     time.Time `json:"reported_at"`
}

// RecordNotify records the agent's notify events for its device: an
// agent_version event sets the device's agent version (the last one of
// the batch wins); unknown event types are ignored. Errors: Invalid for
// no events, an event without a type or an agent_version event without a
// version (naming the field); NotFound for a device the user does not
// have.
func (s *InstallConfigs) RecordNotify(ctx context.Context, userID, deviceID int64, events []NotifyEvent) error {
	if len(events) == 0 {
		return apperr.InvalidField("events", "is required: a non-empty array of event objects")
	}
	var info *AgentInfo
	for i, e := range events {
		if e.Type == "" {
			return apperr.InvalidField(fmt.Sprintf("events[%d].type", i), "is required: a string")
		}
		if e.Type != NotifyAgentVersion {
			continue
		}
		f := fmt.Sprintf("events[%d]", i)
		if e.Version == "" {
			return apperr.InvalidField(f+".version", "is required for an agent_version event")
		}
		for _, m := range []struct{ field, v string }{{"version", e.Version}, {"agent", e.Agent}, {"device_public_id", e.DevicePublicID}} {
			if err := installText(f+"."+m.field, m.v, notifyMaxVersion); err != nil {
				return err
			}
		}
		info = &AgentInfo{Agent: e.Agent, Version: e.Version, DevicePublicID: e.DevicePublicID}
	}
	if _, err := s.installDevices.Get(ctx, userID, deviceID); err != nil {
		return err
	}
	if info == nil {
		return nil
	}
	info.ReportedAt = s.installNow()
	it, err := store.JSONItem(notifyAgentKey(userID, deviceID), info)
	if err != nil {
		return err
	}
	err = s.installStore.Transact(ctx, []store.Write{
		store.CheckWrite(deviceKey(userID, deviceID), store.IfExists),
		store.PutWrite(it, store.Always),
	})
	if errors.Is(err, store.ErrConditionFailed) {
		return apperr.New(apperr.NotFound, "device %d not found", deviceID)
	}
	if err != nil {
		return fmt.Errorf("devices: record the agent version of device %d: %w", deviceID, err)
	}
	return nil
}

// AgentVersion returns what the device's agent last reported with
// agent_version; ok is false when it never did. Errors: NotFound for a
// device the user does not have.
func (s *InstallConfigs) AgentVersion(ctx context.Context, userID, deviceID int64) (info AgentInfo, ok bool, err error) {
	if _, err := s.installDevices.Get(ctx, userID, deviceID); err != nil {
		return AgentInfo{}, false, err
	}
	_, err = store.GetJSON(ctx, s.installStore, notifyAgentKey(userID, deviceID), &info)
	if errors.Is(err, store.ErrNotFound) {
		return AgentInfo{}, false, nil
	}
	if err != nil {
		return AgentInfo{}, false, fmt.Errorf("devices: read the agent version of device %d: %w", deviceID, err)
	}
	return info, true, nil
}
