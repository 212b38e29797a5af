package app_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/certfleet/certfleet/shared/identity"
)

// caSignal finds the signals of typ in a poll and returns the last one's
// ref.
func caSignal(t *testing.T, p updatesPoll, typ string) map[string]any {
	t.Helper()
	if p.Status != 200 || p.Data == nil {
		t.Fatalf("poll: %d %s", p.Status, p.Body)
	}
	var found []map[string]any
	for _, s := range p.Data.Signals {
		if s.Type != nil && *s.Type == typ {
			found = append(found, s.Ref)
		}
	}
	if len(found) == 0 {
		t.Fatalf("no %s signal in %s", typ, p.Body)
	}
	return found[len(found)-1]
}

// TestCAScenario18 is the device protocol's scenario 18 (§7) against the
// local server over HTTP: associating a CA with a device emits
// ca.assigned with ca_id; the device's CA bundle endpoint returns
// ca_certificate_pem; disassociation emits ca.unassigned and the bundle
// is 404. Around it: the CA routes' validation, an inactive CA's bundle
// (403), another device's read (404), and a CA deleted while on a device.
func TestCAScenario18(t *testing.T) {
	a, userID, agentKey := updatesApp(t)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	ctx := context.Background()
	_, key, err := a.Identity.CreateAPIKey(ctx, userID, identity.NewAPIKey{Name: "operator", Permissions: []identity.Permission{
		{ObType: "cas", ObID: "*", Actions: []string{"read", "create", "update", "delete"}},
		{ObType: "devices", ObID: "*", Actions: []string{"read", "update"}}}})
	if err != nil {
		t.Fatal(err)
	}
	c, op := deviceClient{t: t, base: srv.URL}, "bearer:"+key
	devA, accessA, _ := updatesDevice(t, srv.URL, agentKey, 1)
	devB, accessB, _ := updatesDevice(t, srv.URL, agentKey, 2)
	var cur string
	if p := updatesGet(t, srv.URL, "", accessA, ""); p.Status == 200 {
		cur = *p.Data.Cursor
	}

	// Creating a CA: the name is required, the rest has defaults.
	if r := c.do("POST", "/apiv1/me/cas", op, map[string]any{"common_name": "no name"}); r.Status != 400 || r.Error == nil {
		t.Fatalf("CA without a name: %d %+v", r.Status, r.Error)
	}
	r := c.do("POST", "/apiv1/me/cas", op, map[string]any{"name": "Lab root", "organization": "Example Labs", "valid_days": 365})
	if r.Status != 201 || r.str(t, "algorithm") != "ECDSA" || r.str(t, "status") != "ACTIVE" || r.str(t, "valid_days") != "365" {
		t.Fatalf("create CA: %d %+v %+v", r.Status, r.Data, r.Error)
	}
	var caID int64
	fmt.Sscan(r.str(t, "id"), &caID)
	caPEM := r.str(t, "ca_certificate_pem")
	block, _ := pem.Decode([]byte(caPEM))
	if block == nil {
		t.Fatalf("ca_certificate_pem %q", caPEM)
	}
	if cert, err := x509.ParseCertificate(block.Bytes); err != nil || !cert.IsCA || cert.Subject.CommonName != "Lab root" {
		t.Fatalf("CA certificate: %v", err)
	}
	if _, ok := r.Data["sealed_key"]; ok {
		t.Fatal("the CA view carries its sealed key")
	}

	// Associating: ca_id is required; the CA goes on device A with a
	// ca.assigned signal.
	if r := c.do("POST", fmt.Sprintf("/apiv1/me/devices/%d/cas", devA), op, map[string]any{}); r.Status != 400 {
		t.Fatalf("associate without ca_id: %d", r.Status)
	}
	r = c.do("POST", fmt.Sprintf("/apiv1/me/devices/%d/cas", devA), op, map[string]any{"ca_id": caID})
	if r.Status != 201 || r.str(t, "ca_id") != fmt.Sprint(caID) {
		t.Fatalf("associate: %d %+v %+v", r.Status, r.Data, r.Error)
	}
	if r := c.do("POST", fmt.Sprintf("/apiv1/me/devices/%d/cas", devA), op, map[string]any{"ca_id": caID}); r.Status != 200 {
		t.Fatalf("associate again: %d", r.Status)
	}
	p := updatesGet(t, srv.URL, "?limit=100&cursor="+cur, accessA, "")
	ref := caSignal(t, p, "ca.assigned")
	if ref["ca_id"] != float64(caID) || ref["ca_name"] != "Lab root" {
		t.Fatalf("ca.assigned ref %v", ref)
	}
	cur = *p.Data.Cursor

	// The bundle, as the agent asks for it.
	bundle := func(access string) deviceReply {
		return c.do("GET", fmt.Sprintf("/apiv1/devices/self/cas/%d/bundle?pack=download", caID), "bearer:"+access, nil)
	}
	b := bundle(accessA)
	if b.Status != 200 || b.str(t, "ca_certificate_pem") != caPEM || b.str(t, "id") != fmt.Sprint(caID) || b.str(t, "name") != "Lab root" ||
		b.str(t, "status") != "ACTIVE" || b.str(t, "algorithm") != "ECDSA" || b.str(t, "key_size") != "256" || b.str(t, "valid_days") != "365" ||
		b.str(t, "serial_number") == "" {
		t.Fatalf("bundle: %d %+v %+v", b.Status, b.Data, b.Error)
	}
	if der, err := base64.StdEncoding.DecodeString(b.str(t, "ca_certificate_der_b64")); err != nil || string(der) != string(block.Bytes) {
		t.Fatalf("ca_certificate_der_b64 is not the certificate's DER: %v", err)
	}
	if b := bundle(accessB); b.Status != 404 {
		t.Fatalf("device B reads a CA not on it: %d %+v", b.Status, b.Data)
	}
	// The user's views of the device's CAs.
	if r := c.do("GET", fmt.Sprintf("/apiv1/me/devices/%d/cas", devA), op, nil); r.Status != 200 || !json.Valid(r.raw["data"]) ||
		string(r.raw["data"])[0] != '[' || len(r.raw["data"]) < 10 {
		t.Fatalf("list the device's CAs: %d %s", r.Status, r.raw["data"])
	}
	if r := c.do("GET", fmt.Sprintf("/apiv1/me/devices/%d/cas/%d", devA, caID), op, nil); r.Status != 200 || r.str(t, "ca", "name") != "Lab root" {
		t.Fatalf("the device's CA: %d %+v", r.Status, r.Data)
	}

	// Inactive: the bundle is refused until the CA is active again.
	if r := c.do("PUT", fmt.Sprintf("/apiv1/me/cas/%d", caID), op, map[string]any{"status": "INACTIVE"}); r.Status != 200 {
		t.Fatalf("deactivate: %d %+v", r.Status, r.Error)
	}
	if b := bundle(accessA); b.Status != 403 {
		t.Fatalf("bundle of an inactive CA: %d", b.Status)
	}
	if r := c.do("PUT", fmt.Sprintf("/apiv1/me/cas/%d", caID), op, map[string]any{"status": "ACTIVE"}); r.Status != 200 {
		t.Fatalf("activate: %d", r.Status)
	}

	// Disassociating: ca.unassigned, and the bundle is 404.
	if r := c.do("DELETE", fmt.Sprintf("/apiv1/me/devices/%d/cas/%d", devA, caID), op, nil); r.Status != 204 {
		t.Fatalf("dissociate: %d %+v", r.Status, r.Error)
	}
	p = updatesGet(t, srv.URL, "?limit=100&cursor="+cur, accessA, "")
	if ref := caSignal(t, p, "ca.unassigned"); ref["ca_id"] != float64(caID) {
		t.Fatalf("ca.unassigned ref %v", ref)
	}
	if b := bundle(accessA); b.Status != 404 {
		t.Fatalf("bundle after dissociation: %d", b.Status)
	}

	// Deleting a CA that is on device B tells B and leaves nothing.
	if r := c.do("POST", fmt.Sprintf("/apiv1/me/devices/%d/cas", devB), op, map[string]any{"ca_id": caID}); r.Status != 201 {
		t.Fatalf("associate with B: %d", r.Status)
	}
	if r := c.do("DELETE", fmt.Sprintf("/apiv1/me/cas/%d", caID), op, nil); r.Status != 204 {
		t.Fatalf("delete the CA: %d %+v", r.Status, r.Error)
	}
	pb := updatesGet(t, srv.URL, "?limit=100", accessB, "")
	caSignal(t, pb, "ca.assigned")
	if ref := caSignal(t, pb, "ca.unassigned"); ref["ca_id"] != float64(caID) {
		t.Fatalf("B's ca.unassigned ref %v", ref)
	}
	if b := bundle(accessB); b.Status != 404 {
		t.Fatalf("bundle of a deleted CA: %d", b.Status)
	}
	if r := c.do("GET", fmt.Sprintf("/apiv1/me/cas/%d", caID), op, nil); r.Status != 404 {
		t.Fatalf("deleted CA: %d", r.Status)
	}
}
