package certs

import (
	"context"
	"time"

	"github.com/certfleet/certfleet/shared/store"
)

// SetIssued stands in for the step machine in tests: it marks a
// certificate issued with its renewal and expiry times.
func (s *Service) SetIssued(ctx context.Context, userID, id int64, renewAt, notAfter time.Time) error {
	rec, it, err := s.load(ctx, userID, id)
	if err != nil {
		return err
	}
	rec.Status, rec.RenewAt, rec.NotAfter = "issued", renewAt.UTC(), notAfter.UTC()
	next, err := item(rec)
	if err != nil {
		return err
	}
	_, err = s.st.Put(ctx, next, store.IfVersion(it.Version))
	return err
}
