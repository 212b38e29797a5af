// Package devices is the servers and appliances that use certificates
// (cert-ctrl device protocol, ../shared/protocol/): their registration by
// the agent (an X25519 public key whose BLAKE2b-256 is the device's key
// fingerprint, §1.2), the device authorization grant that onboards it
// (grant.go, §1.1), each device's update signal stream (stream.go, §2),
// certificate assignments with their keys wrapped to devices (assign.go,
// wrap.go, §3), private CAs on devices (cas.go, §4.1) and install configs
// with the agent's notify (installconfig.go, §4).
//
// Store layout (table Table; each file documents its own keys):
//
//	user#<user>  device#<019d id>          a device
//	user#<user>  pubid#<device_public_id>  the device id of a public id
//	user#<user>  count                     how many devices the user has
//	user#<user>  assign#..., wrap#...      assignments and key wraps
//	user#<user>  ca#...                    private CAs on devices (cas.go)
//	user#<user>  install#..., agentver#... install configs, agent versions
//	stream#<device>  <cursor> | head       the device's signals
//
// Device ids come from the counter meta/counter/devices. A user never
// reaches another user's device: every key is under the user's partition.
package devices

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/blake2b"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/store"
)

// Tables the service keeps its records in.
const (
	Table        = "devices"
	CounterTable = "meta"
)

// StatusActive is a registered device's status.
const StatusActive = "ACTIVE"

// DefaultMaxPerUser bounds how many devices one user registers.
const DefaultMaxPerUser = 1000

// Device is a registered device as its owner sees it.
type Device struct {
	ID     int64 `json:"id"`
	UserID int64 `json:"user_id"`
	// PublicID is the agent's stable id (36 characters, hex in the
	// 8-4-4-4-12 layout; not an RFC 4122 UUID).
	PublicID   string `json:"device_public_id"`
	Name       string `json:"name"`
	Platform   string `json:"platform"`
	Model      string `json:"model"`
	AppVersion string `json:"app_version"`
	IP         string `json:"ip"`
	UserAgent  string `json:"user_agent"`
	Status     string `json:"status"`
	// PublicKey is the device's X25519 public key (32 bytes); KeyFP its
	// BLAKE2b-256, which deploy materials carry as device_keyfp_b64.
	PublicKey []byte    `json:"dev_pk"`
	KeyFP     []byte    `json:"device_keyfp"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Registration is what the agent sends to register (protocol §1.2).
type Registration struct {
	PublicID string
	// PublicKeyB64 is the standard base64 of the 32-byte X25519 key.
	PublicKeyB64                                     string
	Name, Platform, Model, AppVersion, IP, UserAgent string
}

var publicIDPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// maxText bounds the descriptive fields.
const maxText = 256

// KeyFingerprint is the device key fingerprint: BLAKE2b-256, unkeyed,
// over the raw public key (libsodium crypto_generichash).
func KeyFingerprint(pk []byte) []byte {
	sum := blake2b.Sum256(pk)
	return sum[:]
}

// check validates a registration and decodes its key. Errors: Invalid
// naming the field.
func (r Registration) check() ([]byte, error) {
	if !publicIDPattern.MatchString(r.PublicID) {
		return nil, apperr.InvalidField("device_public_id", "must be 36 characters of hex in the 8-4-4-4-12 layout")
	}
	if r.PublicKeyB64 == "" {
		return nil, apperr.InvalidField("dev_pk", "is required: the device's X25519 public key, base64")
	}
	pk, err := base64.StdEncoding.DecodeString(strings.TrimSpace(r.PublicKeyB64))
	if err != nil || len(pk) != 32 {
		return nil, apperr.InvalidField("dev_pk", "must be the base64 of a 32-byte X25519 public key")
	}
	for _, f := range []struct{ field, v string }{{"name", r.Name}, {"platform", r.Platform}, {"model", r.Model},
		{"app_version", r.AppVersion}, {"ip", r.IP}, {"user_agent", r.UserAgent}} {
		if len(f.v) > maxText || !utf8.ValidString(f.v) {
			return nil, apperr.InvalidField(f.field, "must be valid text of at most %d bytes", maxText)
		}
	}
	return pk, nil
}

func userPK(userID int64) string { return "user#" + strconv.FormatInt(userID, 10) }
func deviceKey(userID, id int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: fmt.Sprintf("device#%019d", id)}
}
func publicIDKey(userID int64, publicID string) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: "pubid#" + strings.ToLower(publicID)}
}
func countKey(userID int64) store.Key {
	return store.Key{Table: Table, PK: userPK(userID), SK: "count"}
}
