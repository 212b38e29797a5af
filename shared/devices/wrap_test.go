package devices_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/internal/testenv"
	"github.com/certfleet/certfleet/shared/store"
)

// wrapKeyPair is a certificate's key: a self-signed leaf and its PKCS #8
// private key.
type wrapKeyPair struct {
	leaf *x509.Certificate
	der  []byte
}

func newWrapKey(t *testing.T, name string) wrapKeyPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	raw, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(raw)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return wrapKeyPair{leaf: leaf, der: der}
}

// matches checks that der is the PKCS #8 key of k's certificate.
func (k wrapKeyPair) matches(t *testing.T, der []byte) {
	t.Helper()
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatalf("decrypted key is not PKCS #8: %v", err)
	}
	if !key.(*ecdsa.PrivateKey).PublicKey.Equal(k.leaf.PublicKey) {
		t.Fatal("decrypted key is not the certificate's")
	}
}

// assignCerts is the user's certificates and their issues' keys.
type assignCerts struct {
	mu    sync.Mutex
	certs map[[2]int64]devices.CertInfo // (user, cert)
	keys  map[[3]int64][]byte           // (user, cert, issue)
}

func newAssignCerts() *assignCerts {
	return &assignCerts{certs: map[[2]int64]devices.CertInfo{}, keys: map[[3]int64][]byte{}}
}

func (f *assignCerts) put(userID int64, c devices.CertInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.certs[[2]int64{userID, c.ID}] = c
}

// issue records issueID with k as the certificate's current issue.
func (f *assignCerts) issue(userID, certID, issueID int64, k wrapKeyPair) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.certs[[2]int64{userID, certID}]
	c.IssueID = issueID
	f.certs[[2]int64{userID, certID}] = c
	f.keys[[3]int64{userID, certID, issueID}] = k.der
}

func (f *assignCerts) CertInfo(_ context.Context, userID, certID int64) (devices.CertInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.certs[[2]int64{userID, certID}]
	if !ok {
		return devices.CertInfo{}, apperr.New(apperr.NotFound, "certificate %d not found", certID)
	}
	return c, nil
}

func (f *assignCerts) IssueKey(_ context.Context, userID, certID, issueID int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.keys[[3]int64{userID, certID, issueID}]), nil
}

// assignSignals records what was signalled.
type assignSignals struct {
	mu  sync.Mutex
	got []assignSignal
}

type assignSignal struct {
	UserID, DeviceID int64
	Type             string
	Ref              map[string]any
}

func (s *assignSignals) Signal(_ context.Context, userID, deviceID int64, typ string, ref map[string]any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, assignSignal{userID, deviceID, typ, ref})
	return nil
}

// take returns and forgets the recorded signals.
func (s *assignSignals) take() []assignSignal {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.got
	s.got = nil
	return out
}

// assignRig is the device registry with assignments over bbolt and the local
// master key.
type assignRig struct {
	p     *testenv.Parts
	reg   *devices.Service
	as    *devices.Assignments
	certs *assignCerts
	sig   *assignSignals
}

func newAssignRig(t *testing.T) *assignRig {
	p := testenv.New(t)
	reg := devices.New(p.Store, &revoked{}, devices.Config{})
	fc, sig := newAssignCerts(), &assignSignals{}
	return &assignRig{p: p, reg: reg, certs: fc, sig: sig, as: devices.NewAssignments(reg, fc, fc, p.Sealer, sig, devices.AssignConfig{})}
}

// assignAgent is a device's key pair, registered.
type assignAgent struct {
	dev    devices.Device
	pk, sk *[32]byte
}

func (r *assignRig) register(t *testing.T, userID int64, publicID string) assignAgent {
	t.Helper()
	pk, sk, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := r.reg.Register(context.Background(), userID, devices.Registration{PublicID: publicID,
		PublicKeyB64: base64.StdEncoding.EncodeToString(pk[:])})
	if err != nil {
		t.Fatal(err)
	}
	return assignAgent{dev: d, pk: pk, sk: sk}
}

// open fetches the agent's materials and decrypts them as the agent does.
func (r *assignRig) open(t *testing.T, userID int64, a assignAgent, certID int64) []byte {
	t.Helper()
	m, err := r.as.Materials(context.Background(), userID, a.dev.ID, certID)
	if err != nil {
		t.Fatalf("Materials: %v", err)
	}
	if m.Scheme != devices.SchemeAEAD || len(m.EncDataKey) != 80 || len(m.Nonce) != 12 || len(m.Tag) != 16 {
		t.Fatalf("materials: scheme %q, enc_data_key %d B, nonce %d B, tag %d B", m.Scheme, len(m.EncDataKey), len(m.Nonce), len(m.Tag))
	}
	if !bytes.Equal(m.DeviceKeyFP, devices.KeyFingerprint(a.pk[:])) {
		t.Fatal("device_keyfp is not the fingerprint of the device key")
	}
	der, err := devices.OpenMaterials(m, a.pk, a.sk)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func assignWantErr(t *testing.T, err error, code apperr.Code, key string) {
	t.Helper()
	if apperr.CodeOf(err) != code || apperr.KeyOf(err) != key {
		t.Fatalf("err = %v (key %q), want %s %s", err, apperr.KeyOf(err), code, key)
	}
}

func TestAEADRoundTripIsTheAgentsConstruction(t *testing.T) {
	k := newWrapKey(t, "round.example")
	dataKey := make([]byte, 32)
	rand.Read(dataKey)
	ct, nonce, tag, err := devices.SealPrivateKey(dataKey, k.der)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) != len(k.der) || len(nonce) != 12 || len(tag) != 16 || bytes.Contains(ct, k.der[:16]) {
		t.Fatalf("ciphertext %d B (key %d B), nonce %d B, tag %d B", len(ct), len(k.der), len(nonce), len(tag))
	}
	pk, sk, _ := box.GenerateKey(rand.Reader)
	enc, err := devices.SealDataKey(dataKey, pk[:])
	if err != nil || len(enc) != 80 {
		t.Fatalf("SealDataKey: %d B, %v", len(enc), err)
	}
	// The agent's steps, by hand: crypto_box_seal_open, then AES-256-GCM
	// with the tag appended.
	opened, ok := box.OpenAnonymous(nil, enc, pk, sk)
	if !ok || !bytes.Equal(opened, dataKey) {
		t.Fatal("crypto_box_seal_open does not give the data key back")
	}
	der, err := devices.OpenMaterials(devices.Materials{EncDataKey: enc, EncPrivKey: ct, Nonce: nonce, Tag: tag}, pk, sk)
	if err != nil {
		t.Fatal(err)
	}
	k.matches(t, der)
	// Another device's key does not open it.
	pk2, sk2, _ := box.GenerateKey(rand.Reader)
	if _, err := devices.OpenMaterials(devices.Materials{EncDataKey: enc, EncPrivKey: ct, Nonce: nonce, Tag: tag}, pk2, sk2); err == nil {
		t.Fatal("another device opened the wrap")
	}
}

func assignStoreKey(pk, sk string) store.Key { return store.Key{Table: devices.Table, PK: pk, SK: sk} }
