// Package events is each user's event log: what happened to their
// certificates (issued, renewed, failed, expiring, revoked), in order, for
// the device and notification services to consume.
//
// An event is written in the same store transaction as the state change
// it reports (Write returns the store.Write to add to it), so a change
// never happens without its event and a replayed change (which loses its
// version condition) never writes a second one.
//
// Store layout (table Table):
//
//	user#<user>  event#<at 20060102T150405.000000000Z>#<019d issue>#<type>
//
// Events expire after Retention.
package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// Table holds the log, beside the issues it mostly reports on.
const Table = "issuance"

// Retention is how long an event is kept.
const Retention = 90 * 24 * time.Hour

// Event types.
const (
	Issued   = "certificate.issued"
	Renewed  = "certificate.renewed"
	Failed   = "certificate.failed"
	Expiring = "certificate.expiring"
	Revoked  = "certificate.revoked"
)

// Event is one entry of a user's log.
type Event struct {
	// ID orders events and is the cursor to read after.
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	UserID  int64     `json:"user_id"`
	CertID  int64     `json:"certificate_id"`
	IssueID int64     `json:"issue_id,omitempty"`
	At      time.Time `json:"at"`
	// Detail is a sentence for people: the failure reason, the names.
	Detail string `json:"detail,omitempty"`
}

func userPK(userID int64) string { return "user#" + strconv.FormatInt(userID, 10) }

const skPrefix = "event#"

// Write returns the write that appends ev (its ID is set from At, IssueID
// and Type), to put into the transaction of the change it reports.
func Write(ev Event) (store.Write, error) {
	ev.At = ev.At.UTC()
	ev.ID = fmt.Sprintf("%s#%019d#%s", ev.At.Format("20060102T150405.000000000Z"), ev.IssueID, ev.Type)
	it, err := store.JSONItem(store.Key{Table: Table, PK: userPK(ev.UserID), SK: skPrefix + ev.ID}, ev)
	if err != nil {
		return store.Write{}, err
	}
	it.ExpiresAt = ev.At.Add(Retention)
	return store.PutWrite(it, store.IfAbsent), nil
}

// Log reads users' logs.
type Log struct{ st store.Store }

// New returns the log over st.
func New(st store.Store) *Log { return &Log{st: st} }

// Append writes one event on its own (for changes that are not a store
// write of their own, such as an expiry warning).
func (l *Log) Append(ctx context.Context, ev Event) error {
	w, err := Write(ev)
	if err != nil {
		return err
	}
	if err := l.st.Transact(ctx, []store.Write{w}); err != nil && !errors.Is(err, store.ErrConditionFailed) {
		return fmt.Errorf("events: append: %w", err)
	}
	return nil
}

// After returns up to limit (0: store.DefaultQueryLimit) of the user's
// events after the one with id after ("" for the oldest kept), oldest
// first. Errors: Invalid for a malformed id.
func (l *Log) After(ctx context.Context, userID int64, after string, limit int) ([]Event, error) {
	q := store.Query{Table: Table, PK: userPK(userID), SKPrefix: skPrefix, Limit: limit}
	if after != "" {
		if len(after) > 100 {
			return nil, apperr.InvalidField("cursor", "is not an event id")
		}
		// The lowest key above after: ids have no spaces, and "~" sorts
		// after every digit an id starts with.
		q.SKPrefix, q.SKFrom, q.SKTo = "", skPrefix+after+" ", skPrefix+"~"
	}
	page, err := l.st.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("events: read: %w", err)
	}
	return store.DecodeEach(page.Items, func(ev Event) Event { return ev })
}
