package devices

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// TokenRevoker revokes a deleted device's refresh tokens
// (devicetoken.Service).
type TokenRevoker interface {
	RevokeDevice(ctx context.Context, deviceID int64) error
}

// Config tunes the service.
type Config struct {
	// MaxPerUser bounds a user's devices; 0 means DefaultMaxPerUser.
	MaxPerUser int
	// OnDelete, when set, is called after a device is deleted (its update
	// stream closed, its assignments forgotten); OnKeyChange after a
	// device re-registers with another key (its certificates rewrapped).
	// Their errors are logged: the device change stands.
	OnDelete, OnKeyChange func(ctx context.Context, userID, deviceID int64) error
	Now                   func() time.Time
	Log                   *slog.Logger
}

// Service is the device registry. Safe for concurrent use.
type Service struct {
	st     store.Store
	tokens TokenRevoker
	cfg    Config
}

// New returns the registry over st; tokens revokes deleted devices'
// refresh tokens.
func New(st store.Store, tokens TokenRevoker, cfg Config) *Service {
	if cfg.MaxPerUser <= 0 {
		cfg.MaxPerUser = DefaultMaxPerUser
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Service{st: st, tokens: tokens, cfg: cfg}
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Second) }

// Register records the user's device, or updates it when the user has
// already registered its device_public_id (a new auth cycle of the same
// agent): one device per (user, device_public_id), whose key, name and
// version the latest registration sets. It returns the device and
// whether it was created. Errors: Invalid naming the field; Conflict at
// MaxPerUser devices.
func (s *Service) Register(ctx context.Context, userID int64, reg Registration) (Device, bool, error) {
	pk, err := reg.check()
	if err != nil {
		return Device{}, false, err
	}
	for range 3 {
		d, ok, err := s.update(ctx, userID, reg, pk)
		if err != nil || ok {
			return d, false, err
		}
		d, err = s.create(ctx, userID, reg, pk)
		if !errors.Is(err, store.ErrConditionFailed) {
			return d, err == nil, err
		}
		// Registered concurrently: update that one.
	}
	return Device{}, false, apperr.New(apperr.Conflict, "device %s is being registered concurrently; try again", reg.PublicID)
}

// update applies reg to the user's device of reg.PublicID, if there is
// one.
func (s *Service) update(ctx context.Context, userID int64, reg Registration, pk []byte) (Device, bool, error) {
	ref, err := s.st.Get(ctx, publicIDKey(userID, reg.PublicID))
	if errors.Is(err, store.ErrNotFound) {
		return Device{}, false, nil
	}
	if err != nil {
		return Device{}, false, fmt.Errorf("devices: read device id: %w", err)
	}
	id, err := strconv.ParseInt(string(ref.Value), 10, 64)
	if err != nil {
		return Device{}, false, fmt.Errorf("devices: bad device id item %s", ref.Key)
	}
	var d Device
	it, err := store.GetJSON(ctx, s.st, deviceKey(userID, id), &d)
	if errors.Is(err, store.ErrNotFound) {
		return Device{}, false, nil // deleted meanwhile
	}
	if err != nil {
		return Device{}, false, fmt.Errorf("devices: read device %d: %w", id, err)
	}
	keyChanged := !bytes.Equal(d.PublicKey, pk)
	d.apply(reg, pk)
	d.UpdatedAt = s.now()
	next, err := store.JSONItem(it.Key, d)
	if err != nil {
		return Device{}, false, err
	}
	// The registration sets every field it carries, so the latest of
	// concurrent ones wins whole; IfExists keeps a deleted device gone.
	_, err = s.st.Put(ctx, next, store.IfExists)
	if errors.Is(err, store.ErrConditionFailed) {
		return Device{}, false, nil
	}
	if err != nil {
		return Device{}, false, fmt.Errorf("devices: update device %d: %w", id, err)
	}
	if keyChanged {
		s.after(ctx, s.cfg.OnKeyChange, "key change", userID, id)
	}
	return d, true, nil
}

func (d *Device) apply(reg Registration, pk []byte) {
	d.PublicKey, d.KeyFP = pk, KeyFingerprint(pk)
	d.Name, d.Platform, d.Model, d.AppVersion = reg.Name, reg.Platform, reg.Model, reg.AppVersion
	d.IP, d.UserAgent, d.Status = reg.IP, reg.UserAgent, StatusActive
}

// create stores a new device, then counts it against MaxPerUser (taking
// it back when over), so registrations that lose a race for the same
// public id never count. ErrConditionFailed: the public id was registered
// meanwhile.
func (s *Service) create(ctx context.Context, userID int64, reg Registration, pk []byte) (Device, error) {
	id, err := s.st.Increment(ctx, store.Key{Table: CounterTable, PK: "counter", SK: "devices"}, 1, time.Time{})
	if err != nil {
		return Device{}, fmt.Errorf("devices: next device id: %w", err)
	}
	d := Device{ID: id, UserID: userID, PublicID: reg.PublicID, CreatedAt: s.now(), UpdatedAt: s.now()}
	d.apply(reg, pk)
	it, err := store.JSONItem(deviceKey(userID, id), d)
	if err != nil {
		return Device{}, err
	}
	ref := store.Item{Key: publicIDKey(userID, reg.PublicID), Value: []byte(strconv.FormatInt(id, 10))}
	if err := s.st.Transact(ctx, []store.Write{store.PutWrite(ref, store.IfAbsent), store.PutWrite(it, store.IfAbsent)}); err != nil {
		if errors.Is(err, store.ErrConditionFailed) {
			return Device{}, err
		}
		return Device{}, fmt.Errorf("devices: create: %w", err)
	}
	n, err := s.st.Increment(ctx, countKey(userID), 1, time.Time{})
	if err == nil && n <= int64(s.cfg.MaxPerUser) {
		return d, nil
	}
	if err == nil {
		s.uncount(ctx, userID)
		err = apperr.New(apperr.Conflict, "a user has at most %d devices; delete one first", s.cfg.MaxPerUser)
	} else {
		err = fmt.Errorf("devices: count the user's devices: %w", err)
	}
	undo := []store.Write{store.DeleteWrite(it.Key, store.Always), store.DeleteWrite(ref.Key, store.Always)}
	if uerr := s.st.Transact(context.WithoutCancel(ctx), undo); uerr != nil {
		s.cfg.Log.Error("devices: taking back a device over the limit failed", "device", id, "err", uerr)
	}
	return Device{}, err
}

// uncount lowers the user's device count; a failure leaves it high (one
// device less room), so it is logged.
func (s *Service) uncount(ctx context.Context, userID int64) {
	if _, err := s.st.Increment(context.WithoutCancel(ctx), countKey(userID), -1, time.Time{}); err != nil {
		s.cfg.Log.Error("devices: lowering the user's device count failed; it stays high", "user", userID, "err", err)
	}
}

// Get returns one of the user's devices. Errors: NotFound.
func (s *Service) Get(ctx context.Context, userID, id int64) (Device, error) {
	var d Device
	_, err := store.GetJSON(ctx, s.st, deviceKey(userID, id), &d)
	if errors.Is(err, store.ErrNotFound) {
		return Device{}, apperr.New(apperr.NotFound, "device %d not found", id)
	}
	if err != nil {
		return Device{}, fmt.Errorf("devices: read device %d: %w", id, err)
	}
	return d, nil
}

// ByPublicID returns the user's device with that device_public_id.
// Errors: NotFound.
func (s *Service) ByPublicID(ctx context.Context, userID int64, publicID string) (Device, error) {
	if !publicIDPattern.MatchString(publicID) {
		return Device{}, apperr.New(apperr.NotFound, "device %q not found", publicID)
	}
	ref, err := s.st.Get(ctx, publicIDKey(userID, publicID))
	if errors.Is(err, store.ErrNotFound) {
		return Device{}, apperr.New(apperr.NotFound, "device %q not found", publicID)
	}
	if err != nil {
		return Device{}, fmt.Errorf("devices: read device id: %w", err)
	}
	id, err := strconv.ParseInt(string(ref.Value), 10, 64)
	if err != nil {
		return Device{}, fmt.Errorf("devices: bad device id item %s", ref.Key)
	}
	return s.Get(ctx, userID, id)
}

// List returns the user's devices, oldest first, skipping offset and
// returning at most limit (0: 100), with their total.
func (s *Service) List(ctx context.Context, userID int64, offset, limit int) ([]Device, int, error) {
	if limit <= 0 {
		limit = store.DefaultQueryLimit
	}
	q := store.Query{Table: Table, PK: userPK(userID), SKPrefix: "device#", Limit: store.MaxQueryLimit}
	out, total := []Device{}, 0
	for {
		page, err := s.st.Query(ctx, q)
		if err != nil {
			return nil, 0, fmt.Errorf("devices: list: %w", err)
		}
		for _, it := range page.Items {
			if total >= offset && len(out) < limit {
				var d Device
				if err := store.DecodeJSON(it, &d); err != nil {
					return nil, 0, err
				}
				out = append(out, d)
			}
			total++
		}
		if q.Cursor = page.Cursor; q.Cursor == "" {
			return out, total, nil
		}
	}
}

// Delete removes one of the user's devices for good and revokes its
// refresh tokens. Errors: NotFound.
func (s *Service) Delete(ctx context.Context, userID, id int64) error {
	d, err := s.Get(ctx, userID, id)
	if err != nil {
		return err
	}
	err = s.st.Transact(ctx, []store.Write{
		store.DeleteWrite(deviceKey(userID, id), store.IfExists),
		store.DeleteWrite(publicIDKey(userID, d.PublicID), store.Always),
	})
	if errors.Is(err, store.ErrConditionFailed) {
		return apperr.New(apperr.NotFound, "device %d not found", id)
	}
	if err != nil {
		return fmt.Errorf("devices: delete device %d: %w", id, err)
	}
	s.uncount(ctx, userID)
	s.after(ctx, s.cfg.OnDelete, "delete", userID, id)
	if err := s.tokens.RevokeDevice(ctx, id); err != nil {
		return fmt.Errorf("devices: device %d deleted, but revoking its tokens failed: %w", id, err)
	}
	return nil
}

// after runs a hook of a device change, logging its failure.
func (s *Service) after(ctx context.Context, hook func(context.Context, int64, int64) error, what string, userID, deviceID int64) {
	if hook == nil {
		return
	}
	if err := hook(ctx, userID, deviceID); err != nil {
		s.cfg.Log.Error("devices: the follow-up of a device change failed", "change", what, "device", deviceID, "err", err)
	}
}
