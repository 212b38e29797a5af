package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/keys"
	keyslocal "github.com/certfleet/certfleet/shared/keys/local"
	queuelocal "github.com/certfleet/certfleet/shared/queue/local"
	"github.com/certfleet/certfleet/shared/store/bolt"
	"github.com/certfleet/certfleet/shared/worker"
)

// DataFileName is the bbolt file under the data directory.
const DataFileName = "certfleet.db"

// Local builds the embedded shape: one bbolt file under cfg.DataDir holds
// the store and the issuance queue, and a master key file wraps data keys.
// The master key is created only together with a new data file: an existing
// data file without its key is an error, never a silent new key.
func Local(ctx context.Context, cfg config.Config, opts ...Option) (*App, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("app: data directory: %w", err)
	}
	dbPath := filepath.Join(cfg.DataDir, DataFileName)
	_, statErr := os.Stat(dbPath)
	fresh := errors.Is(statErr, fs.ErrNotExist)

	wrapper, err := keyslocal.Open(cfg.MasterKeyFile, fresh)
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	db, err := bolt.OpenDB(dbPath)
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	st := bolt.New(db)
	a := &App{Config: cfg, Log: newLogger(cfg), Store: st, Sealer: keys.NewEnvelope(wrapper), Steps: &worker.Registry{},
		purgeExpired: st.PurgeExpired}
	a.closers = append(a.closers, db.Close)
	a.Queue, err = queuelocal.New(db, IssuanceQueue, queuelocal.Options{
		Visibility: cfg.QueueVisibility, MaxReceiveCount: cfg.QueueMaxReceives,
	})
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("app: %w", err)
	}
	m, err := newMailer(cfg, a, cfg.SMTP.Password)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("app: %w", err)
	}
	if err := a.wireServices(m, collect(opts)); err != nil {
		a.Close()
		return nil, err
	}
	if fresh {
		a.Log.Info("created a new data directory; back up the master key with it",
			"data", dbPath, "master_key", cfg.MasterKeyFile)
	}
	return a, nil
}
