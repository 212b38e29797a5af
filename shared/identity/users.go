package identity

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	cfmail "github.com/certfleet/certfleet/shared/mail"
	"github.com/certfleet/certfleet/shared/store"
)

// User statuses.
const (
	StatusPending = "pending" // registered, not yet activated
	StatusActive  = "active"
)

// User is an account as shown to its owner and to admins.
type User struct {
	ID        int64     `json:"id"`
	Email     string    `json:"email"`
	Username  string    `json:"username,omitempty"`
	Name      string    `json:"name,omitempty"`
	Roles     []string  `json:"roles"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
}

// IsAdmin reports whether the user has the admin role.
func (u User) IsAdmin() bool {
	for _, r := range u.Roles {
		if r == RoleAdmin {
			return true
		}
	}
	return false
}

// RoleAdmin may act on every user's objects and reach /apiv1/admin/*.
const RoleAdmin = "admin"

// userRecord is the stored user; the hash never leaves the package.
type userRecord struct {
	User
	PasswordHash string `json:"password_hash"`
}

// Registration is what a new account needs.
type Registration struct {
	Email    string
	Password string
	Username string
	Name     string
	Admin    bool
	// Active skips the activation mail (the admin CLI).
	Active bool
}

var usernamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$`)

func userKey(id int64) store.Key {
	return store.Key{Table: Table, PK: "user#" + strconv.FormatInt(id, 10), SK: "profile"}
}
func emailKey(email string) store.Key {
	return store.Key{Table: Table, PK: "email#" + email, SK: "email"}
}
func usernameKey(name string) store.Key {
	return store.Key{Table: Table, PK: "username#" + strings.ToLower(name), SK: "username"}
}

// NormalizeEmail validates an address (Invalid naming the field "email")
// and returns its canonical, lower-case form.
func NormalizeEmail(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", apperr.InvalidField("email", "is required")
	}
	a, err := mail.ParseAddress(raw)
	if err != nil || a.Address != raw || len(raw) > 254 || strings.ContainsAny(raw, "\r\n") {
		return "", apperr.InvalidField("email", "%q is not a valid email address", raw)
	}
	return strings.ToLower(raw), nil
}

func checkUsername(name string) error {
	if name != "" && !usernamePattern.MatchString(name) {
		return apperr.InvalidField("username", "use 3 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

// Available reports whether an email and/or a username are free. Either may
// be empty; at least one must be given.
func (s *Service) Available(ctx context.Context, email, username string) (map[string]bool, error) {
	out := map[string]bool{}
	if email == "" && username == "" {
		return nil, apperr.InvalidField("email", "give email or username to check")
	}
	if email != "" {
		e, err := NormalizeEmail(email)
		if err != nil {
			return nil, err
		}
		if out["email"], err = s.absent(ctx, emailKey(e)); err != nil {
			return nil, err
		}
	}
	if username != "" {
		if err := checkUsername(username); err != nil {
			return nil, err
		}
		var err error
		if out["username"], err = s.absent(ctx, usernameKey(username)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Service) absent(ctx context.Context, k store.Key) (bool, error) {
	_, err := s.st.Get(ctx, k)
	if errors.Is(err, store.ErrNotFound) {
		return true, nil
	}
	return false, err
}

// Register creates an account. The email (and username, if given) must be
// free (else Conflict); the password must meet PasswordRule. Unless
// r.Active, the account starts pending and an activation mail is sent.
func (s *Service) Register(ctx context.Context, r Registration) (User, error) {
	email, err := NormalizeEmail(r.Email)
	if err != nil {
		return User{}, err
	}
	if err := checkUsername(r.Username); err != nil {
		return User{}, err
	}
	if len(r.Name) > 100 {
		return User{}, apperr.InvalidField("name", "has at most 100 characters")
	}
	if err := CheckPassword(r.Password); err != nil {
		return User{}, err
	}
	id, err := s.st.Increment(ctx, store.Key{Table: CounterTable, PK: "counter", SK: "users"}, 1, time.Time{})
	if err != nil {
		return User{}, fmt.Errorf("identity: next user id: %w", err)
	}
	rec := userRecord{User: User{ID: id, Email: email, Username: r.Username, Name: r.Name,
		Roles: []string{}, Status: StatusPending, CreatedAt: s.now().UTC()}, PasswordHash: hashPassword(r.Password, s.hash)}
	if r.Admin {
		rec.Roles = []string{RoleAdmin}
	}
	if r.Active {
		rec.Status = StatusActive
	}
	writes, err := s.userWrites(rec)
	if err != nil {
		return User{}, err
	}
	ref := []byte(strconv.FormatInt(id, 10))
	writes = append(writes, store.PutWrite(store.Item{Key: emailKey(email), Value: ref}, store.IfAbsent))
	if r.Username != "" {
		writes = append(writes, store.PutWrite(store.Item{Key: usernameKey(r.Username), Value: ref}, store.IfAbsent))
	}
	if err := s.st.Transact(ctx, writes); err != nil {
		var tx *store.TxError
		if errors.As(err, &tx) && tx.Index == 1 {
			return User{}, &apperr.Error{Code: apperr.Conflict, Field: "email", Message: "email is already registered"}
		}
		if errors.As(err, &tx) && tx.Index == 2 {
			return User{}, &apperr.Error{Code: apperr.Conflict, Field: "username", Message: "username is taken"}
		}
		return User{}, fmt.Errorf("identity: register: %w", err)
	}
	if rec.Status == StatusPending {
		if err := s.sendActivation(ctx, rec.User); err != nil {
			s.undoRegister(ctx, writes)
			return User{}, err
		}
	}
	return rec.User, nil
}

// undoRegister removes a registration whose activation mail could not be
// sent, so the address can register again; nothing stays half-made.
func (s *Service) undoRegister(ctx context.Context, writes []store.Write) {
	undo := make([]store.Write, len(writes))
	for i, w := range writes {
		undo[i] = store.DeleteWrite(w.Item.Key, store.Always)
	}
	if err := s.st.Transact(context.WithoutCancel(ctx), undo); err != nil {
		s.log.Error("identity: undoing a registration failed", "err", err)
	}
}

// userWrites is the user item put as a new item (IfAbsent).
func (s *Service) userWrites(rec userRecord) ([]store.Write, error) {
	it, err := store.JSONItem(userKey(rec.ID), rec)
	if err != nil {
		return nil, err
	}
	it.Indexes = map[string]store.IndexKey{gsi1: {PK: "users", SK: fmt.Sprintf("%019d", rec.ID)}}
	return []store.Write{store.PutWrite(it, store.IfAbsent)}, nil
}

func (s *Service) getUser(ctx context.Context, id int64) (userRecord, store.Item, error) {
	var rec userRecord
	it, err := store.GetJSON(ctx, s.st, userKey(id), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return rec, it, apperr.New(apperr.NotFound, "user %d not found", id)
	}
	return rec, it, err
}

// GetUser returns user id, or NotFound.
func (s *Service) GetUser(ctx context.Context, id int64) (User, error) {
	rec, _, err := s.getUser(ctx, id)
	return rec.User, err
}

// ListUsers returns users in id order, after the cursor; for admins.
func (s *Service) ListUsers(ctx context.Context, limit int, cursor string) ([]User, string, error) {
	page, err := s.st.Query(ctx, store.Query{Table: Table, Index: gsi1, PK: "users", Limit: limit, Cursor: cursor})
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return nil, "", apperr.InvalidField("cursor", "is not valid for this list")
		}
		return nil, "", err
	}
	users, err := store.DecodeEach(page.Items, func(r userRecord) User { return r.User })
	return users, page.Cursor, err
}

// errBadLogin is the one answer to every wrong email/password pair.
var errBadLogin = apperr.New(apperr.Unauthorized, "email or password is incorrect")

// Authenticate checks an email and password and returns the user. A wrong
// email and a wrong password fail alike (Unauthorized, same message, same
// work); a pending account fails with Forbidden after a correct password.
func (s *Service) Authenticate(ctx context.Context, email, password string) (User, error) {
	e, err := NormalizeEmail(email)
	if err != nil || password == "" || len(password) > MaxPasswordBytes {
		verifyPassword(password, s.dummyHash)
		return User{}, errBadLogin
	}
	id, err := s.userIDByEmail(ctx, e)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			verifyPassword(password, s.dummyHash)
			return User{}, errBadLogin
		}
		return User{}, err
	}
	rec, _, err := s.getUser(ctx, id)
	if err != nil {
		return User{}, err
	}
	if !verifyPassword(password, rec.PasswordHash) {
		return User{}, errBadLogin
	}
	if rec.Status != StatusActive {
		return User{}, apperr.New(apperr.Forbidden, "account is not activated yet: follow the link in the activation mail")
	}
	return rec.User, nil
}

// UserIDByEmail returns the id of the account with that address; found is
// false when there is none or the address is malformed.
func (s *Service) UserIDByEmail(ctx context.Context, email string) (id int64, found bool, err error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return 0, false, nil
	}
	id, err = s.userIDByEmail(ctx, e)
	if errors.Is(err, store.ErrNotFound) {
		return 0, false, nil
	}
	return id, err == nil, err
}

func (s *Service) userIDByEmail(ctx context.Context, email string) (int64, error) {
	it, err := s.st.Get(ctx, emailKey(email))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(it.Value), 10, 64)
}

// updateUser applies fn to the stored user under optimistic concurrency.
func (s *Service) updateUser(ctx context.Context, id int64, fn func(*userRecord)) (User, error) {
	for attempt := 0; attempt < 5; attempt++ {
		rec, it, err := s.getUser(ctx, id)
		if err != nil {
			return User{}, err
		}
		fn(&rec)
		next, err := store.JSONItem(it.Key, rec)
		if err != nil {
			return User{}, err
		}
		next.Indexes = it.Indexes
		if _, err := s.st.Put(ctx, next, store.IfVersion(it.Version)); err == nil {
			return rec.User, nil
		} else if !errors.Is(err, store.ErrConditionFailed) {
			return User{}, err
		}
	}
	return User{}, apperr.New(apperr.Conflict, "user %d is being changed concurrently; try again", id)
}

// mailOut sends m, logging (never returning) a delivery failure detail.
func (s *Service) mailOut(ctx context.Context, m cfmail.Message) error {
	if err := s.mail.Send(ctx, m); err != nil {
		s.log.Error("identity: sending mail failed", "subject", m.Subject, "err", err)
		return apperr.New(apperr.Unavailable, "could not send mail to %s; try again later", m.To)
	}
	return nil
}
