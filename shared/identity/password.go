package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/crypto/argon2"

	"github.com/certfleet/certfleet/shared/apperr"
)

// PasswordRule is the password policy of seed 001, as shown to users.
const PasswordRule = "a password needs at least 8 characters with an upper-case letter, a lower-case letter and a digit"

// MaxPasswordBytes bounds the work an attacker can ask of the hasher.
const MaxPasswordBytes = 256

// CheckPassword enforces PasswordRule; the error names the rule.
func CheckPassword(pw string) error {
	var upper, lower, digit bool
	for _, r := range pw {
		upper = upper || unicode.IsUpper(r)
		lower = lower || unicode.IsLower(r)
		digit = digit || unicode.IsDigit(r)
	}
	if len([]rune(pw)) < 8 || !upper || !lower || !digit {
		return apperr.InvalidField("password", "%s", PasswordRule)
	}
	if len(pw) > MaxPasswordBytes {
		return apperr.InvalidField("password", "a password has at most %d bytes", MaxPasswordBytes)
	}
	return nil
}

// Argon2id parameters: OWASP's baseline (19 MiB, 2 passes, 1 lane).
type hashParams struct {
	memoryKiB uint32
	time      uint32
	threads   uint8
}

var defaultHash = hashParams{memoryKiB: 19 * 1024, time: 2, threads: 1}

const (
	saltBytes = 16
	keyBytes  = 32
)

// hashPassword returns the PHC string of pw under argon2id.
func hashPassword(pw string, p hashParams) string {
	salt := make([]byte, saltBytes)
	_, _ = rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, p.time, p.memoryKiB, p.threads, keyBytes)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memoryKiB, p.time, p.threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// verifyPassword reports whether pw matches the PHC string, in time that
// does not depend on where a mismatch is.
func verifyPassword(pw, phc string) bool {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return false
	}
	var p hashParams
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memoryKiB, &p.time, &p.threads); err != nil {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, p.time, p.memoryKiB, p.threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}
