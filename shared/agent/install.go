package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
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
	ID              string  `json:"id"`
	Type            string  `json:"type"`
	Enabled         *bool   `json:"enabled"`
	ContinueOnError bool    `json:"continue_on_error"`
	ObType          string  `json:"ob_type"`
	ObID            flexInt `json:"ob_id"`
	// From names virtual files (certMaterial, caFiles); To their
	// destinations, "" skipping one.
	From []string `json:"from"`
	To   []string `json:"to"`
	// Cmd is a string (/bin/sh -c) or an argv array; a non-empty one
	// makes the item an exec item, whatever its type.
	Cmd       json.RawMessage   `json:"cmd"`
	TimeoutMs flexInt           `json:"timeout_ms"`
	RunAs     string            `json:"run_as"`
	Env       map[string]string `json:"env"`
}

func (it installItem) enabled() bool { return it.Enabled == nil || *it.Enabled }

func (it installItem) copiesCert(id int64) bool {
	return it.enabled() && it.Type == "copy" && it.ObType == "cert" && int64(it.ObID) == id && len(it.To) > 0
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

// fetchInstallConfig gets the device's install config and saves it; it
// reports whether the config differs from the saved one.
func (a *Agent) fetchInstallConfig(ctx context.Context) (*installConfig, bool, error) {
	r, err := a.device(ctx, "GET", "/apiv1/devices/self/install-config", nil, nil)
	if err != nil {
		return nil, false, fmt.Errorf("install config: %w", err)
	}
	if r.Status != 200 {
		return nil, false, r.failure("install config")
	}
	var raw json.RawMessage
	if err := r.data(&raw); err != nil {
		return nil, false, fmt.Errorf("install config: %w", err)
	}
	var c installConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, false, fmt.Errorf("install config: %w", err)
	}
	changed, err := writeFileAtomic(a.path(configFile), raw, 0o600)
	if err != nil {
		return nil, false, err
	}
	a.printf("saved install config version %d (%d items)", c.Version, len(c.Installs))
	return &c, changed, nil
}

// errNotReady is a certificate whose materials are not there yet
// (WRAP_PENDING, not issued): a later cert.updated brings them.
var errNotReady = errors.New("not ready")

// installCert writes the files of every enabled copy item of the
// certificate; it returns how many files changed and the password of
// its bundle.pfx ("" when no item copies one).
func (a *Agent) installCert(ctx context.Context, cfg *installConfig, certID int64) (int, string, error) {
	var items []installItem
	wantPFX := false
	for _, it := range cfg.Installs {
		if it.copiesCert(certID) {
			items = append(items, it)
			wantPFX = wantPFX || slices.Contains(it.From, "bundle.pfx")
		}
	}
	if len(items) == 0 {
		a.printf("certificate %d: no copy item in the install config", certID)
		return 0, "", nil
	}
	m, err := a.materialize(ctx, certID)
	if errors.Is(err, errNotReady) {
		a.printf("certificate %d is not ready yet (%v)", certID, err)
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("certificate %d: %w", certID, err)
	}
	password := ""
	if wantPFX {
		pfx, pw, err := a.bundlePFX(m)
		if err != nil {
			return 0, "", fmt.Errorf("certificate %d: bundle.pfx: %w", certID, err)
		}
		m.files["bundle.pfx"] = vfile{pfx, 0o600}
		password = pw
	}
	changed := 0
	for _, it := range items {
		n, err := a.copyFiles(it, m.files, fmt.Sprintf("certificate %d", certID))
		changed += n
		if err != nil {
			return changed, password, err
		}
	}
	return changed, password, nil
}

// copyFiles writes the item's from files to its to paths atomically;
// what names the source in the output ("certificate 7", "CA 3"). It
// returns how many files changed.
func (a *Agent) copyFiles(it installItem, files map[string]vfile, what string) (int, error) {
	if len(it.From) != len(it.To) {
		return 0, fmt.Errorf("install item %q: from and to differ in length", it.ID)
	}
	changed := 0
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
			return changed, fmt.Errorf("install %s of %s: %w", from, what, err)
		}
		if did {
			changed++
			a.printf("installed %s to %s (%s)", what, to, from)
		} else {
			a.printf("%s %s at %s is up to date", what, from, to)
		}
	}
	return changed, nil
}

type vfile struct {
	data []byte
	mode os.FileMode
}

// certMaterial is a certificate's materials and its virtual files:
// private.key (0600), certificate.pem, chain.pem, fullchain.pem,
// certificate.der and meta.json; installCert adds bundle.pfx.
type certMaterial struct {
	id    int64
	key   crypto.Signer
	leaf  *x509.Certificate
	chain []*x509.Certificate
	files map[string]vfile
}

// certMeta is a certificate's meta.json: what it is, never key material.
type certMeta struct {
	CertID            int64     `json:"cert_id"`
	DomainName        string    `json:"domain_name"`
	Serial            string    `json:"serial"`
	NotBefore         time.Time `json:"not_before"`
	NotAfter          time.Time `json:"not_after"`
	SHA256Fingerprint string    `json:"sha256_fingerprint"`
	SANs              []string  `json:"sans"`
	Issuer            string    `json:"issuer"`
}

// materialize fetches the certificate's detail and deploy materials
// (§3.1) and builds its virtual files.
func (a *Agent) materialize(ctx context.Context, certID int64) (*certMaterial, error) {
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
		DomainName     string          `json:"domain_name"`
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
		blocks = append(blocks, pemBlocks([]byte(p))...)
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
	var issuers []*x509.Certificate
	for _, b := range pemBlocks([]byte(chain)) {
		blk, _ := pem.Decode([]byte(b))
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			issuers = append(issuers, c)
		}
	}

	keyPEM, err := a.privateKey(ctx, base, detail.PrivateKeyPEM)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if p, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !p.Equal(leaf.PublicKey) {
		return nil, errors.New("the private key does not match the certificate")
	}
	meta, err := json.MarshalIndent(newCertMeta(certID, detail.DomainName, leaf), "", "  ")
	if err != nil {
		return nil, err
	}
	return &certMaterial{id: certID, key: key, leaf: leaf, chain: issuers, files: map[string]vfile{
		"private.key":     {keyPEM, 0o600},
		"certificate.pem": {[]byte(leafPEM), 0o644},
		"chain.pem":       {[]byte(chain), 0o644},
		"fullchain.pem":   {[]byte(full), 0o644},
		"certificate.der": {leafBlock.Bytes, 0o644},
		"meta.json":       {append(meta, '\n'), 0o644},
	}}, nil
}

// newCertMeta describes the leaf; domain is the detail's domain_name
// (the leaf's first name when empty).
func newCertMeta(certID int64, domain string, leaf *x509.Certificate) certMeta {
	sans := append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		sans = append(sans, ip.String())
	}
	if domain == "" {
		domain = leaf.Subject.CommonName
		if domain == "" && len(sans) > 0 {
			domain = sans[0]
		}
	}
	fp := sha256.Sum256(leaf.Raw)
	return certMeta{CertID: certID, DomainName: domain, Serial: hex.EncodeToString(leaf.SerialNumber.Bytes()),
		NotBefore: leaf.NotBefore.UTC(), NotAfter: leaf.NotAfter.UTC(), SHA256Fingerprint: hex.EncodeToString(fp[:]),
		SANs: sans, Issuer: leaf.Issuer.String()}
}

// pemBlocks splits PEM text into its blocks, each re-encoded.
func pemBlocks(b []byte) []string {
	var out []string
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		out = append(out, string(pem.EncodeToMemory(blk)))
	}
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

// parseKey parses a PEM private key (PKCS #8, PKCS #1 or SEC 1).
func parseKey(keyPEM []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("the private key is not PEM")
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
		return nil, fmt.Errorf("the private key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("the private key is not a signing key")
	}
	return s, nil
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
// event type as $1 and env (CERTCTRL_EVENT, CERTCTRL_PFX_PASSWORD...)
// added to the agent's environment.
func (a *Agent) runScript(ctx context.Context, cfg *installConfig, event string, env []string) error {
	if cfg == nil || cfg.AfterUpdateScript == nil {
		return nil
	}
	script := scriptVariant(*cfg.AfterUpdateScript)
	if strings.TrimSpace(script) == "" {
		return nil
	}
	argv := []string{"/bin/sh", "-c", script, "after_update_script", event}
	if err := a.runCommand(ctx, "after_update_script", argv, append(os.Environ(), env...), a.scriptTimeout()); err != nil {
		return err
	}
	a.printf("ran after_update_script for %s", event)
	return nil
}

func (a *Agent) scriptTimeout() time.Duration {
	if a.ScriptTimeout > 0 {
		return a.ScriptTimeout
	}
	return 30 * time.Second
}
