package kms_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/keys/kms"
)

// fakeKMS answers the KMS JSON protocol for GenerateDataKey and Decrypt,
// which moto cannot do here: moto enforces no IAM on Decrypt, so it cannot
// show an access denial that is about permissions rather than the blob.
type fakeKMS struct {
	allowGenerate bool
	allowDecrypt  bool // for blobs this fake made

	mu    sync.Mutex
	calls map[string]int
}

func (f *fakeKMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	f.mu.Lock()
	f.calls[op]++
	f.mu.Unlock()
	var in struct{ CiphertextBlob []byte }
	_ = json.NewDecoder(r.Body).Decode(&in)
	deny := func() {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"__type":"AccessDeniedException","message":"User: arn:aws:sts::1:assumed-role/x is not authorized to perform: kms:` + op + `"}`))
	}
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	switch {
	case op == "GenerateDataKey" && f.allowGenerate:
		_, _ = w.Write([]byte(`{"CiphertextBlob":"` + base64.StdEncoding.EncodeToString([]byte("ours")) + `","Plaintext":"` + key + `","KeyId":"k"}`))
	case op == "Decrypt" && f.allowDecrypt && string(in.CiphertextBlob) == "ours":
		_, _ = w.Write([]byte(`{"Plaintext":"` + key + `","KeyId":"k"}`))
	default:
		deny()
	}
}

func fakeWrapper(t *testing.T, f *fakeKMS) *kms.Wrapper {
	f.calls = map[string]int{}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c := awskms.New(awskms.Options{
		BaseEndpoint:     aws.String(srv.URL),
		Region:           "us-east-1",
		Credentials:      aws.AnonymousCredentials{},
		RetryMaxAttempts: 1,
	})
	return kms.New(c, "k")
}

func TestAccessDeniedIsNotTampered(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name         string
		fake         *fakeKMS
		blob         string
		wantTampered bool
		wantCalls    map[string]int
	}{
		{"no permissions", &fakeKMS{}, "ours", false, map[string]int{"Decrypt": 1, "GenerateDataKey": 1}},
		{"generate only", &fakeKMS{allowGenerate: true}, "ours", false, map[string]int{"Decrypt": 2, "GenerateDataKey": 1}},
		{"foreign blob", &fakeKMS{allowGenerate: true, allowDecrypt: true}, "theirs", true, map[string]int{"Decrypt": 2, "GenerateDataKey": 1}},
	}
	for _, c := range cases {
		w := fakeWrapper(t, c.fake)
		_, err := w.UnwrapDataKey(ctx, []byte(c.blob), map[string]string{"id": "1"})
		if err == nil {
			t.Fatalf("%s: UnwrapDataKey succeeded", c.name)
		}
		if got := errors.Is(err, keys.ErrTampered); got != c.wantTampered {
			t.Errorf("%s: ErrTampered = %v, want %v (%v)", c.name, got, c.wantTampered, err)
		}
		if !c.wantTampered && !strings.Contains(err.Error(), "denied") {
			t.Errorf("%s: %v should say access was denied", c.name, err)
		}
		for op, n := range c.wantCalls {
			if c.fake.calls[op] != n {
				t.Errorf("%s: %d %s calls, want %d", c.name, c.fake.calls[op], op, n)
			}
		}
	}
}
