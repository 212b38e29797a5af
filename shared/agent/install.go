package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/nacl/box"
)

// installConfig is the install config DTO (§4.2) the agent reads.
type installConfig struct {
	ID                int64         `json:"id"`
	Version           int64         `json:"version"`
	Installs          []installItem `json:"installs"`
	AfterUpdateScript *string       `json:"after_update_script"`
}

// installItem is one install item.
type installItem struct {
	ID      string   `json:"id"`
	Type    string   `json:"type"`
	Enabled *bool    `json:"enabled"`
	ObType  string   `json:"ob_type"`
	ObID    flexInt  `json:"ob_id"`
	From    []string `json:"from"`
	To      []string `json:"to"`
}

func (it installItem) copiesCert(id int64) bool {
	return (it.Enabled == nil || *it.Enabled) && it.Type == "copy" && it.ObType == "cert" && int64(it.ObID) == id && len(it.To) > 0
}

// certIDs are the certificates the config's enabled copy items copy.
func (c *installConfig) certIDs() []int64 {
	var ids []int64
	seen := map[int64]bool{}
	for _, it := range c.Installs {
		if id := int64(it.ObID); it.ObType == "cert" && it.copiesCert(id) && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// savedInstallConfig is the last fetched config (nil when none).
func (a *Agent) savedInstallConfig() (*installConfig, error) {
	var c installConfig
	if err := readJSON(a.path(configFile), &c); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return &c, nil
}

// fetchInstallConfig gets the device's install config and saves it.
func (a *Agent) fetchInstallConfig(ctx context.Context) (*installConfig, error) {
	r, err := a.device(ctx, "GET", "/apiv1/devices/self/install-config", nil, nil)
	if err != nil {
		return nil, fmt.Errorf("install config: %w", err)
	}
	if r.Status != 200 {
		return nil, r.failure("install config")
	}
	var raw json.RawMessage
	if err := r.data(&raw); err != nil {
		return nil, fmt.Errorf("install config: %w", err)
	}
	var c installConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("install config: %w", err)
	}
	if _, err := writeFileAtomic(a.path(configFile), raw, 0o600); err != nil {
		return nil, err
	}
	a.printf("saved install config version %d (%d items)", c.Version, len(c.Installs))
	return &c, nil
}

// errNotReady is a certificate whose materials are not there yet
// (WRAP_PENDING, not issued): a later cert.updated brings them.
var errNotReady = errors.New("not ready")

// installCert writes the files of every enabled copy item of the
// certificate; it returns how many files changed.
func (a *Agent) installCert(ctx context.Context, cfg *installConfig, certID int64) (int, error) {
	var items []installItem
	for _, it := range cfg.Installs {
		if it.copiesCert(certID) {
			items = append(items, it)
		}
	}
	if len(items) == 0 {
		a.printf("certificate %d: no copy item in the install config", certID)
		return 0, nil
	}
	files, err := a.materialize(ctx, certID)
	if errors.Is(err, errNotReady) {
		a.printf("certificate %d is not ready yet (%v)", certID, err)
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("certificate %d: %w", certID, err)
	}
	changed := 0
	for _, it := range items {
		if len(it.From) != len(it.To) {
			return changed, fmt.Errorf("install item %q: from and to differ in length", it.ID)
		}
		for i, from := range it.From {
			to := it.To[i]
			if to == "" {
				continue
			}
			f, ok := files[from]
			if !ok {
				return changed, fmt.Errorf("install item %q: unsupported file %q", it.ID, from)
			}
			if !strings.HasPrefix(to, "/") {
				return changed, fmt.Errorf("install item %q: %q is not an absolute path", it.ID, to)
			}
			did, err := writeFileAtomic(to, f.data, f.mode)
			if err != nil {
				return changed, fmt.Errorf("install %s of certificate %d: %w", from, certID, err)
			}
			if did {
				changed++
				a.printf("installed certificate %d to %s (%s)", certID, to, from)
			} else {
				a.printf("certificate %d %s at %s is up to date", certID, from, to)
			}
		}
	}
	return changed, nil
}

type vfile struct {
	data []byte
	mode os.FileMode
}

// materialize fetches the certificate's detail and deploy materials
// (§3.1) and builds its virtual files.
func (a *Agent) materialize(ctx context.Context, certID int64) (map[string]vfile, error) {
	base := fmt.Sprintf("/apiv1/devices/self/certificates/%d", certID)
	r, err := a.device(ctx, "GET", base, nil, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != 200 {
		if r.Status == 409 || r.Status == 404 {
			return nil, fmt.Errorf("%w: %v", errNotReady, r.failure("detail"))
		}
		return nil, r.failure("detail")
	}
	var raw json.RawMessage
	if err := r.data(&raw); err != nil {
		return nil, err
	}
	var wrapped struct {
		Certificate json.RawMessage `json:"certificate"`
	}
	if json.Unmarshal(raw, &wrapped); len(wrapped.Certificate) > 0 && wrapped.Certificate[0] == '{' {
		raw = wrapped.Certificate
	}
	var detail struct {
		CertificatePEM json.RawMessage `json:"certificate_pem"`
		Cert           json.RawMessage `json:"cert"`
		ChainPEM       string          `json:"chain_pem"`
		FullchainPEM   string          `json:"fullchain_pem"`
		PrivateKeyPEM  string          `json:"private_key_pem"`
	}
	if err := json.Unmarshal(raw, &detail); err != nil {
		return nil, fmt.Errorf("detail: %w", err)
	}
	pems := pemList(detail.CertificatePEM)
	if len(pems) == 0 {
		pems = pemList(detail.Cert)
	}
	if len(pems) == 0 {
		return nil, fmt.Errorf("%w: the detail has no certificate", errNotReady)
	}
	// A single PEM string may hold the whole chain: split its blocks.
	var blocks []string
	for _, p := range pems {
		rest := []byte(p)
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			blocks = append(blocks, string(pem.EncodeToMemory(b)))
		}
	}
	if len(blocks) == 0 {
		return nil, errors.New("the detail's certificate is not PEM")
	}
	leafPEM := blocks[0]
	chain := detail.ChainPEM
	if chain == "" {
		chain = strings.Join(blocks[1:], "")
	}
	full := detail.FullchainPEM
	if full == "" {
		full = leafPEM + chain
	}
	leafBlock, _ := pem.Decode([]byte(leafPEM))
	leaf, err := x509.ParseCertificate(leafBlock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the detail's certificate: %w", err)
	}

	key, err := a.privateKey(ctx, base, detail.PrivateKeyPEM)
	if err != nil {
		return nil, err
	}
	if err := keyMatches(key, leaf.PublicKey); err != nil {
		return nil, err
	}
	return map[string]vfile{
		"private.key":     {key, 0o600},
		"certificate.pem": {[]byte(leafPEM), 0o644},
		"chain.pem":       {[]byte(chain), 0o644},
		"fullchain.pem":   {[]byte(full), 0o644},
		"certificate.der": {leafBlock.Bytes, 0o644},
	}, nil
}

// pemList reads a PEM string or an array of them.
func pemList(raw json.RawMessage) []string {
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return []string{s}
	}
	var l []string
	json.Unmarshal(raw, &l)
	return l
}

// materials is the deploy-materials payload (§3.3).
type materials struct {
	Scheme        json.RawMessage `json:"enc_scheme"`
	KeyFP         string          `json:"device_keyfp_b64"`
	EncDataKey    string          `json:"enc_data_key_b64"`
	EncPrivKey    string          `json:"enc_privkey_b64"`
	Nonce         string          `json:"privkey_nonce_b64"`
	Tag           string          `json:"privkey_tag_b64"`
	PrivateKeyPEM string          `json:"private_key_pem"`
	PrivateKeyDER string          `json:"private_key_der_b64"`
}

// privateKey fetches the deploy materials and returns the private key
// as PEM; fallbackPEM is the detail's key (used on 404/204).
func (a *Agent) privateKey(ctx context.Context, base, fallbackPEM string) ([]byte, error) {
	var r *response
	var err error
	delay := 3 * time.Second
	for attempt := 0; ; attempt++ {
		r, err = a.device(ctx, "GET", base+"/deploy-materials", nil, nil)
		if err != nil {
			return nil, err
		}
		if r.Status != 503 || attempt >= 3 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
	switch {
	case r.Status == 409 && bytes.Contains(r.Body, []byte("WRAP_PENDING")):
		return nil, fmt.Errorf("%w: the key is not wrapped for this device yet (WRAP_PENDING)", errNotReady)
	case r.Status == 404 || r.Status == 204:
		if fallbackPEM == "" {
			return nil, fmt.Errorf("%w: no deploy materials", errNotReady)
		}
		return toPEM([]byte(fallbackPEM))
	case r.Status != 200:
		return nil, r.failure("deploy materials")
	}
	var m materials
	if err := r.data(&m); err != nil {
		return nil, fmt.Errorf("deploy materials: %w", err)
	}
	pk, sk, err := a.Keys()
	if err != nil {
		return nil, err
	}
	return openMaterials(m, pk, sk)
}

// openMaterials decrypts deploy materials with the device's keys
// (§3.4) and returns the private key as PEM.
func openMaterials(m materials, pk, sk *[32]byte) ([]byte, error) {
	scheme := strings.Trim(string(m.Scheme), `"`)
	switch scheme {
	case "plaintext", "0":
		if m.PrivateKeyPEM != "" {
			return toPEM([]byte(m.PrivateKeyPEM))
		}
		der, err := base64.StdEncoding.DecodeString(m.PrivateKeyDER)
		if err != nil || len(der) == 0 {
			return nil, errors.New("plaintext deploy materials without a key")
		}
		return toPEM(der)
	case "", "aes256gcm", "1":
	default:
		return nil, fmt.Errorf("unsupported enc_scheme %s", m.Scheme)
	}
	b64 := func(name, s string) ([]byte, error) {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("deploy materials: %s: %w", name, err)
		}
		return b, nil
	}
	if m.KeyFP != "" {
		fp, err := b64("device_keyfp_b64", m.KeyFP)
		if err != nil {
			return nil, err
		}
		if mine := blake2b.Sum256(pk[:]); !bytes.Equal(fp, mine[:]) {
			return nil, errors.New("deploy materials: device key fingerprint mismatch (re-run login?)")
		}
	}
	encKey, err := b64("enc_data_key_b64", m.EncDataKey)
	if err != nil {
		return nil, err
	}
	ct, err := b64("enc_privkey_b64", m.EncPrivKey)
	if err != nil {
		return nil, err
	}
	nonce, err := b64("privkey_nonce_b64", m.Nonce)
	if err != nil {
		return nil, err
	}
	tag, err := b64("privkey_tag_b64", m.Tag)
	if err != nil {
		return nil, err
	}
	k, ok := box.OpenAnonymous(nil, encKey, pk, sk)
	if !ok || len(k) != 32 {
		return nil, errors.New("deploy materials: the data key does not open with this device's key")
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if len(nonce) != gcm.NonceSize() || len(tag) != gcm.Overhead() {
		return nil, errors.New("deploy materials: bad nonce or tag length")
	}
	plain, err := gcm.Open(nil, nonce, append(ct, tag...), nil)
	if err != nil {
		return nil, errors.New("deploy materials: the private key does not decrypt")
	}
	return toPEM(plain)
}

// toPEM returns a private key as PEM: PEM text as it is, PKCS #8 DER as
// "PRIVATE KEY", PKCS #1 / SEC 1 DER converted to PKCS #8.
func toPEM(b []byte) ([]byte, error) {
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN")) {
		return b, nil
	}
	if _, err := x509.ParsePKCS8PrivateKey(b); err == nil {
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b}), nil
	}
	var key any
	if k, err := x509.ParsePKCS1PrivateKey(b); err == nil {
		key = k
	} else if k, err := x509.ParseECPrivateKey(b); err == nil {
		key = k
	} else {
		return nil, errors.New("the private key is neither PEM nor PKCS #8, PKCS #1 or SEC 1 DER")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// keyMatches checks that the PEM private key is the certificate's.
func keyMatches(keyPEM []byte, pub crypto.PublicKey) error {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return errors.New("the private key is not PEM")
	}
	var key any
	var err error
	switch b.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return fmt.Errorf("the private key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return errors.New("the private key is not a signing key")
	}
	if p, ok := s.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !p.Equal(pub) {
		return errors.New("the private key does not match the certificate")
	}
	return nil
}

// scriptVariant picks the posix.sh block of after_update_script, or
// the whole text when it has no @@@BEGIN markers.
func scriptVariant(text string) string {
	if !strings.Contains(text, "@@@BEGIN") {
		return text
	}
	lines := strings.Split(text, "\n")
	var out []string
	in := false
	for _, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "@@@BEGIN"):
			in = strings.TrimSpace(strings.TrimPrefix(t, "@@@BEGIN")) == "posix.sh"
		case strings.HasPrefix(t, "@@@END"):
			in = false
		case in:
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// runScript runs the config's after_update_script with /bin/sh -c, the
// event type as $1.
func (a *Agent) runScript(ctx context.Context, cfg *installConfig, event string) error {
	if cfg == nil || cfg.AfterUpdateScript == nil {
		return nil
	}
	script := scriptVariant(*cfg.AfterUpdateScript)
	if strings.TrimSpace(script) == "" {
		return nil
	}
	timeout := a.ScriptTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script, "after_update_script", event)
	cmd.Env = append(os.Environ(), "CERTCTRL_EVENT="+event)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("after_update_script timed out after %s", timeout)
		}
		return fmt.Errorf("after_update_script failed: %v: %s", err, strings.TrimSpace(string(out)))
	}
	a.printf("ran after_update_script for %s", event)
	return nil
}
