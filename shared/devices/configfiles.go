package devices

// Config files: the agent settings a user pushes to a device (seed 000's
// .../devices/:device_id/config-files), delivered inline by the
// config.updated signal (cert-ctrl device protocol §2.3, §4.5). The agent
// has no endpoint to fetch them: the signal carries the whole file.
//
// Store layout (table Table, partition user#<user>, beside the device):
//
//	cfgfile#<019d device>#<file>  the file's current content (ConfigFile)
//
// A write is conditional on the stored version and on the device still
// existing; only then is config.updated signalled.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// The config files an agent applies: "application" (of which the agent
// applies only verbose) and "websocket" (a full snapshot of its
// WebSocket settings, applied in WebSocket mode).
const (
	ConfigFileApplication = "application"
	ConfigFileWebsocket   = "websocket"
)

// ConfigFileNames lists the config files, in order.
var ConfigFileNames = []string{ConfigFileApplication, ConfigFileWebsocket}

// MaxConfigFileBytes bounds a config file's content.
const MaxConfigFileBytes = 8 << 10

// applicationRemoteKeys are the application settings a server may set;
// the others are the agent's own (auto_apply_config, trust pins, the
// grace window, ...) and are never set remotely.
var applicationRemoteKeys = []string{"verbose"}

// ConfigFile is one config file of a device. Version 0 with an empty
// object is a file never written.
type ConfigFile struct {
	DeviceID  int64           `json:"device_id"`
	File      string          `json:"file"`
	Version   int64           `json:"version"`
	Content   json.RawMessage `json:"content"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// ConfigFiles keeps devices' config files. Safe for concurrent use.
type ConfigFiles struct {
	cfReg *Service
	cfSt  store.Store
	cfSig Signaler
}

// NewConfigFiles returns the config files of the devices in reg (over
// its store), telling devices through sig.
func NewConfigFiles(reg *Service, sig Signaler) *ConfigFiles {
	return &ConfigFiles{cfReg: reg, cfSt: reg.st, cfSig: sig}
}

func configFilePrefix(deviceID int64) string { return fmt.Sprintf("cfgfile#%019d#", deviceID) }
func configFileKey(userID, deviceID int64, file string) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: configFilePrefix(deviceID) + file}
}

func checkConfigFileName(file string) error {
	if !slices.Contains(ConfigFileNames, file) {
		return apperr.New(apperr.NotFound, "no config file %q: the agent applies %s", file, strings.Join(ConfigFileNames, " and "))
	}
	return nil
}

// Get returns the device's config file (version 0 and {} when never
// written). Errors: NotFound for a missing device or an unknown file.
func (c *ConfigFiles) Get(ctx context.Context, userID, deviceID int64, file string) (ConfigFile, error) {
	if err := checkConfigFileName(file); err != nil {
		return ConfigFile{}, err
	}
	if _, err := c.cfReg.Get(ctx, userID, deviceID); err != nil {
		return ConfigFile{}, err
	}
	f, _, err := c.get(ctx, userID, deviceID, file)
	return f, err
}

// List returns every config file of the device, in ConfigFileNames
// order. Errors: NotFound for a missing device.
func (c *ConfigFiles) List(ctx context.Context, userID, deviceID int64) ([]ConfigFile, error) {
	if _, err := c.cfReg.Get(ctx, userID, deviceID); err != nil {
		return nil, err
	}
	out := make([]ConfigFile, 0, len(ConfigFileNames))
	for _, file := range ConfigFileNames {
		f, _, err := c.get(ctx, userID, deviceID, file)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// get reads a file and the version it is stored at (0: never written).
func (c *ConfigFiles) get(ctx context.Context, userID, deviceID int64, file string) (ConfigFile, int64, error) {
	var f ConfigFile
	it, err := store.GetJSON(ctx, c.cfSt, configFileKey(userID, deviceID, file), &f)
	if errors.Is(err, store.ErrNotFound) {
		return ConfigFile{DeviceID: deviceID, File: file, Content: json.RawMessage("{}")}, 0, nil
	}
	if err != nil {
		return ConfigFile{}, 0, fmt.Errorf("devices: read config file: %w", err)
	}
	return f, it.Version, nil
}

// checkContent validates a file's content: a JSON object of at most
// MaxConfigFileBytes; for application, only the settings a server may
// set. It returns the object's members.
func checkContent(file string, content json.RawMessage) (map[string]json.RawMessage, error) {
	if len(content) > MaxConfigFileBytes {
		return nil, apperr.InvalidField("content", "must be at most %d bytes", MaxConfigFileBytes)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(content, &members); err != nil || members == nil {
		return nil, apperr.InvalidField("content", "must be a JSON object")
	}
	if file == ConfigFileApplication {
		for k, v := range members {
			if !slices.Contains(applicationRemoteKeys, k) {
				return nil, apperr.InvalidField("content."+k, "is the agent's own setting and is never set remotely; the server sets only %s",
					strings.Join(applicationRemoteKeys, ", "))
			}
			var s string
			if json.Unmarshal(v, &s) != nil {
				return nil, apperr.InvalidField("content."+k, "must be a string")
			}
		}
	}
	return members, nil
}

// changedPaths names the top-level members that differ between two
// objects, sorted.
func changedPaths(before, after map[string]json.RawMessage) []string {
	var out []string
	for k, v := range after {
		if old, ok := before[k]; !ok || !jsonEqual(old, v) {
			out = append(out, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// jsonEqual compares two JSON values by their compact form.
func jsonEqual(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// maxReason bounds the reason a change carries to the agent.
const maxReason = 128

// Put replaces the device's config file with content and signals
// config.updated {"replace": [{"file", "content"}], "reason",
// "changed_paths"} (reason defaults to "user_update"). Writing the same
// content again keeps the version and signals again, so a retry after a
// failed signal delivers it. Errors: NotFound
// for a missing device or an unknown file; Invalid naming the field;
// Conflict when it changed meanwhile (a retry is safe).
func (c *ConfigFiles) Put(ctx context.Context, userID, deviceID int64, file string, content json.RawMessage, reason string) (ConfigFile, error) {
	if err := checkConfigFileName(file); err != nil {
		return ConfigFile{}, err
	}
	after, err := checkContent(file, content)
	if err != nil {
		return ConfigFile{}, err
	}
	if reason = strings.TrimSpace(reason); reason == "" {
		reason = "user_update"
	}
	if len(reason) > maxReason || !utf8.ValidString(reason) {
		return ConfigFile{}, apperr.InvalidField("reason", "must be text of at most %d bytes", maxReason)
	}
	if _, err := c.cfReg.Get(ctx, userID, deviceID); err != nil {
		return ConfigFile{}, err
	}
	cur, version, err := c.get(ctx, userID, deviceID, file)
	if err != nil {
		return ConfigFile{}, err
	}
	var before map[string]json.RawMessage
	_ = json.Unmarshal(cur.Content, &before)
	paths := changedPaths(before, after)
	next := cur
	if version == 0 || len(paths) > 0 {
		if next, err = c.write(ctx, userID, deviceID, file, content, cur.Version, version); err != nil {
			return ConfigFile{}, err
		}
	}
	if paths == nil {
		paths = []string{}
	}
	ref := map[string]any{"replace": []map[string]any{{"file": file, "content": next.Content}}, "reason": reason, "changed_paths": paths}
	if err := c.cfSig.Signal(ctx, userID, deviceID, SignalConfigUpdated, ref); err != nil {
		return ConfigFile{}, fmt.Errorf("devices: config file %s of device %d written, but signalling it failed: %w", file, deviceID, err)
	}
	return next, nil
}

// write stores content as the file's next version over the stored one
// (version 0: none).
func (c *ConfigFiles) write(ctx context.Context, userID, deviceID int64, file string, content json.RawMessage, curVersion, version int64) (ConfigFile, error) {
	var compact bytes.Buffer
	_ = json.Compact(&compact, content) // valid: checkContent decoded it
	next := ConfigFile{DeviceID: deviceID, File: file, Version: curVersion + 1, Content: compact.Bytes(), UpdatedAt: c.cfReg.now()}
	it, err := store.JSONItem(configFileKey(userID, deviceID, file), next)
	if err != nil {
		return ConfigFile{}, err
	}
	cond := store.IfAbsent
	if version > 0 {
		cond = store.IfVersion(version)
	}
	err = c.cfSt.Transact(ctx, []store.Write{store.CheckWrite(deviceKey(userID, deviceID), store.IfExists), store.PutWrite(it, cond)})
	if errors.Is(err, store.ErrConditionFailed) {
		return ConfigFile{}, apperr.New(apperr.Conflict, "config file %s of device %d changed meanwhile, or the device was deleted; try again", file, deviceID)
	}
	if err != nil {
		return ConfigFile{}, fmt.Errorf("devices: write config file: %w", err)
	}
	return next, nil
}

// ForgetDevice deletes a deleted device's config files. Errors are
// transient (a retry is safe).
func (c *ConfigFiles) ForgetDevice(ctx context.Context, userID, deviceID int64) error {
	for _, file := range ConfigFileNames {
		if err := c.cfSt.Delete(ctx, configFileKey(userID, deviceID, file), store.Always); err != nil {
			return fmt.Errorf("devices: forget the config files of device %d: %w", deviceID, err)
		}
	}
	return nil
}
