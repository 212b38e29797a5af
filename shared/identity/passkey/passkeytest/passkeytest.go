// Package passkeytest is a software WebAuthn authenticator for tests: it
// answers the options a relying party sends with real attestation objects
// ("none" format, CBOR, a COSE EC2 P-256 key) and real ECDSA assertions,
// the way a browser and a platform authenticator together would, and it
// can be told to get things wrong (origin, RP id, challenge, signature,
// sign counter) so tests can watch the relying party refuse them.
package passkeytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// Authenticator data flags.
const (
	flagUP = 0x01 // user present
	flagUV = 0x04 // user verified
	flagAT = 0x40 // attested credential data included
)

// Credential is a key pair the authenticator made.
type Credential struct {
	ID         []byte
	Key        *ecdsa.PrivateKey
	RPID       string
	UserHandle []byte
	// Counter is the last sign count reported; each assertion adds one.
	Counter uint32
}

// IDString is the credential id as base64url, as the relying party shows it.
func (c *Credential) IDString() string { return base64.RawURLEncoding.EncodeToString(c.ID) }

// Authenticator holds credentials and plays the browser at Origin.
type Authenticator struct {
	// Origin is what client data claims the page's origin is.
	Origin string

	mu    sync.Mutex
	creds []*Credential
}

// New returns an authenticator behind a browser at origin.
func New(origin string) *Authenticator { return &Authenticator{Origin: origin} }

// Tweaks make one answer wrong on purpose; the zero value changes nothing.
type Tweaks struct {
	// Origin replaces the client data origin.
	Origin string
	// RPID hashes another RP id into the authenticator data.
	RPID string
	// Challenge replaces the challenge in the client data.
	Challenge []byte
	// Type replaces the client data type (webauthn.create / webauthn.get).
	Type string
	// BadSignature corrupts the assertion signature.
	BadSignature bool
	// Counter, when set, is the sign count to report instead of the next one.
	Counter *uint32
	// Credential picks the credential for an assertion.
	Credential *Credential
}

// Credentials returns the credentials made so far.
func (a *Authenticator) Credentials() []*Credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.creds)
}

// b64 is base64url without padding, which WebAuthn JSON uses throughout.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// bytesField decodes a base64url JSON string (padding tolerated).
type bytesField []byte

func (b *bytesField) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	out, err := base64.RawURLEncoding.DecodeString(s)
	*b = out
	return err
}

type descriptor struct {
	Type string     `json:"type"`
	ID   bytesField `json:"id"`
}

type credParam struct {
	Type string `json:"type"`
	Alg  int    `json:"alg"`
}

type creationOptions struct {
	PublicKey struct {
		RP struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"rp"`
		User struct {
			ID   bytesField `json:"id"`
			Name string     `json:"name"`
		} `json:"user"`
		Challenge  bytesField   `json:"challenge"`
		PubKeyCred []credParam  `json:"pubKeyCredParams"`
		Exclude    []descriptor `json:"excludeCredentials"`
	} `json:"publicKey"`
}

type requestOptions struct {
	PublicKey struct {
		Challenge bytesField   `json:"challenge"`
		RPID      string       `json:"rpId"`
		Allow     []descriptor `json:"allowCredentials"`
	} `json:"publicKey"`
}

// ErrExcluded is what Create answers when the options exclude a credential
// this authenticator holds (the browser's InvalidStateError).
var ErrExcluded = errors.New("passkeytest: a credential of this authenticator is excluded")

// ErrNoCredential is what Get answers when no credential fits the options.
var ErrNoCredential = errors.New("passkeytest: no credential fits the request")

// Create answers creation options (the JSON a relying party sends for
// navigator.credentials.create) with a PublicKeyCredential as JSON, and
// keeps the new credential.
func (a *Authenticator) Create(optionsJSON []byte, tw Tweaks) ([]byte, *Credential, error) {
	var o creationOptions
	if err := json.Unmarshal(optionsJSON, &o); err != nil {
		return nil, nil, fmt.Errorf("passkeytest: creation options: %w", err)
	}
	pk := o.PublicKey
	if pk.RP.ID == "" || len(pk.Challenge) == 0 || len(pk.User.ID) == 0 {
		return nil, nil, errors.New("passkeytest: creation options lack rp.id, challenge or user.id")
	}
	if !slices.ContainsFunc(pk.PubKeyCred, func(p credParam) bool { return p.Type == "public-key" && p.Alg == -7 }) {
		return nil, nil, errors.New("passkeytest: the relying party does not accept ES256")
	}
	a.mu.Lock()
	for _, c := range a.creds {
		for _, ex := range pk.Exclude {
			if c.RPID == pk.RP.ID && string(ex.ID) == string(c.ID) {
				a.mu.Unlock()
				return nil, nil, ErrExcluded
			}
		}
	}
	a.mu.Unlock()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	cred := &Credential{ID: id, Key: key, RPID: pk.RP.ID, UserHandle: slices.Clone([]byte(pk.User.ID))}

	cose, err := coseKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	rpID := pk.RP.ID
	if tw.RPID != "" {
		rpID = tw.RPID
	}
	var counter uint32
	if tw.Counter != nil {
		counter = *tw.Counter
	}
	authData := authenticatorData(rpID, flagUP|flagUV|flagAT, counter)
	authData = append(authData, make([]byte, 16)...) // AAGUID: none
	authData = binary.BigEndian.AppendUint16(authData, uint16(len(id)))
	authData = append(authData, id...)
	authData = append(authData, cose...)

	enc, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		return nil, nil, err
	}
	attObj, err := enc.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData})
	if err != nil {
		return nil, nil, err
	}
	clientData, err := a.clientData("webauthn.create", pk.Challenge, tw)
	if err != nil {
		return nil, nil, err
	}
	out, err := json.Marshal(map[string]any{
		"id":    b64(id),
		"rawId": b64(id),
		"type":  "public-key",
		"response": map[string]any{
			"clientDataJSON":    b64(clientData),
			"attestationObject": b64(attObj),
			"transports":        []string{"internal", "hybrid"},
		},
		"clientExtensionResults":  map[string]any{},
		"authenticatorAttachment": "platform",
	})
	if err != nil {
		return nil, nil, err
	}
	cred.Counter = counter
	a.mu.Lock()
	a.creds = append(a.creds, cred)
	a.mu.Unlock()
	return out, cred, nil
}

// Get answers request options (the JSON for navigator.credentials.get)
// with an assertion as JSON, signed by tw.Credential or else the first
// credential the options allow (any of this RP's when they list none: a
// discoverable login).
func (a *Authenticator) Get(optionsJSON []byte, tw Tweaks) ([]byte, error) {
	var o requestOptions
	if err := json.Unmarshal(optionsJSON, &o); err != nil {
		return nil, fmt.Errorf("passkeytest: request options: %w", err)
	}
	pk := o.PublicKey
	if pk.RPID == "" || len(pk.Challenge) == 0 {
		return nil, errors.New("passkeytest: request options lack rpId or challenge")
	}
	a.mu.Lock()
	cred := tw.Credential
	if cred == nil {
		for _, c := range a.creds {
			if c.RPID != pk.RPID {
				continue
			}
			if len(pk.Allow) == 0 || slices.ContainsFunc(pk.Allow, func(d descriptor) bool { return string(d.ID) == string(c.ID) }) {
				cred = c
				break
			}
		}
	}
	if cred == nil {
		a.mu.Unlock()
		return nil, ErrNoCredential
	}
	counter := cred.Counter + 1
	if tw.Counter != nil {
		counter = *tw.Counter
	}
	cred.Counter = counter
	a.mu.Unlock()

	rpID := pk.RPID
	if tw.RPID != "" {
		rpID = tw.RPID
	}
	authData := authenticatorData(rpID, flagUP|flagUV, counter)
	clientData, err := a.clientData("webauthn.get", pk.Challenge, tw)
	if err != nil {
		return nil, err
	}
	cdHash := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(slices.Clone(authData), cdHash[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, cred.Key, digest[:])
	if err != nil {
		return nil, err
	}
	if tw.BadSignature {
		sig[len(sig)-1] ^= 0x01
	}
	return json.Marshal(map[string]any{
		"id":    b64(cred.ID),
		"rawId": b64(cred.ID),
		"type":  "public-key",
		"response": map[string]any{
			"clientDataJSON":    b64(clientData),
			"authenticatorData": b64(authData),
			"signature":         b64(sig),
			"userHandle":        b64(cred.UserHandle),
		},
		"clientExtensionResults":  map[string]any{},
		"authenticatorAttachment": "platform",
	})
}

func (a *Authenticator) clientData(typ string, challenge []byte, tw Tweaks) ([]byte, error) {
	origin := a.Origin
	if tw.Origin != "" {
		origin = tw.Origin
	}
	if tw.Challenge != nil {
		challenge = tw.Challenge
	}
	if tw.Type != "" {
		typ = tw.Type
	}
	return json.Marshal(struct {
		Type        string `json:"type"`
		Challenge   string `json:"challenge"`
		Origin      string `json:"origin"`
		CrossOrigin bool   `json:"crossOrigin"`
	}{typ, b64(challenge), origin, false})
}

// authenticatorData is rpIdHash || flags || signCount.
func authenticatorData(rpID string, flags byte, counter uint32) []byte {
	h := sha256.Sum256([]byte(rpID))
	out := append(h[:], flags)
	return binary.BigEndian.AppendUint32(out, counter)
}

// coseKey encodes a P-256 public key as a COSE_Key (EC2, ES256).
func coseKey(pub *ecdsa.PublicKey) ([]byte, error) {
	raw, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, err
	}
	enc, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		return nil, err
	}
	return enc.Marshal(map[int]any{
		1:  2,          // kty: EC2
		3:  -7,         // alg: ES256
		-1: 1,          // crv: P-256
		-2: raw[1:33],  // x
		-3: raw[33:65], // y
	})
}
