package agent

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"software.sslmate.com/src/go-pkcs12"
)

// pfxState is certs/<id>/pfx.json (0600): the password of the
// certificate's bundle.pfx and the materials it was made for. The
// password stays while the key and chain stay the same, and is replaced
// when they change (a renewal).
type pfxState struct {
	MaterialSHA256 string `json:"material_sha256"`
	Password       string `json:"password"`
}

func (a *Agent) certDir(certID int64) string {
	return a.path(filepath.Join("certs", strconv.FormatInt(certID, 10)))
}

// bundlePFX is the certificate's bundle.pfx (PKCS #12, pkcs12.Modern2023:
// the key, the leaf and its chain) and its password. For the same
// materials and password the bytes are the same, so an unchanged
// certificate leaves an installed bundle.pfx alone.
func (a *Agent) bundlePFX(m *certMaterial) ([]byte, string, error) {
	h := sha256.New()
	h.Write(m.files["private.key"].data)
	h.Write(m.leaf.Raw)
	for _, c := range m.chain {
		h.Write(c.Raw)
	}
	digest := hex.EncodeToString(h.Sum(nil))

	path := filepath.Join(a.certDir(m.id), "pfx.json")
	var st pfxState
	if err := readJSON(path, &st); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, "", err
	}
	if st.Password == "" || st.MaterialSHA256 != digest {
		var b [18]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, "", err
		}
		st = pfxState{MaterialSHA256: digest, Password: base64.RawURLEncoding.EncodeToString(b[:])}
		if err := os.MkdirAll(a.certDir(m.id), 0o700); err != nil {
			return nil, "", err
		}
		if err := writeJSON(path, st, 0o600); err != nil {
			return nil, "", err
		}
		a.printf("certificate %d: new bundle.pfx password in %s", m.id, path)
	}
	// The salts and IVs come from a stream keyed by the password and the
	// materials: secret, and the same for the same bundle.
	mac := hmac.New(sha256.New, []byte(st.Password))
	mac.Write([]byte(digest))
	var seed [32]byte
	copy(seed[:], mac.Sum(nil))
	pfx, err := pkcs12.Modern2023.WithRand(&hashStream{seed: seed}).Encode(m.key, m.leaf, m.chain, st.Password)
	if err != nil {
		return nil, "", fmt.Errorf("encode: %w", err)
	}
	return pfx, st.Password, nil
}

// hashStream is SHA-256 in counter mode over a secret seed: a
// deterministic byte stream.
type hashStream struct {
	seed [32]byte
	n    uint64
	buf  []byte
}

func (s *hashStream) Read(p []byte) (int, error) {
	for i := range p {
		if len(s.buf) == 0 {
			var block [40]byte
			copy(block[:], s.seed[:])
			binary.BigEndian.PutUint64(block[32:], s.n)
			s.n++
			sum := sha256.Sum256(block[:])
			s.buf = sum[:]
		}
		p[i] = s.buf[0]
		s.buf = s.buf[1:]
	}
	return len(p), nil
}

// forgetCert removes the agent's state of an unassigned certificate
// (its bundle.pfx password).
func (a *Agent) forgetCert(certID int64) error {
	return os.RemoveAll(a.certDir(certID))
}
