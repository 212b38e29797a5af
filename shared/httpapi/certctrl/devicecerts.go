package certctrl

// Certificates on devices (cert-ctrl device protocol §3, §4.4): the user
// assigns certificates to devices; a device reads the detail and the
// deploy materials of the certificates assigned to it.

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/certs"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
	"github.com/certfleet/certfleet/shared/identity"
	"github.com/certfleet/certfleet/shared/issuance"
)

// CertExporter gives a certificate's current certificate and chain
// (issuance.Service). Errors: NotFound; Conflict with key NOT_ISSUED
// before the first issue.
type CertExporter interface {
	Export(ctx context.Context, userID, certID int64, withKey bool) (issuance.Export, error)
}

// CertRecords reads certificate records (certs.Service). Errors: NotFound.
type CertRecords interface {
	Get(ctx context.Context, userID, id int64) (certs.Certificate, error)
}

// DeviceCertDeps is what the device certificate routes use.
type DeviceCertDeps struct {
	Assignments *devices.Assignments
	Devices     *devices.Service
	Certs       CertRecords
	Export      CertExporter
	Guard       *httpapi.Guard
	// Verifier checks device access tokens (devicetoken.Service).
	Verifier httpapi.DeviceVerifier
}

type deviceCertRoutes struct{ DeviceCertDeps }

// DeviceCertRoutes are DeviceCertUserRoutes and DeviceCertSelfRoutes.
func DeviceCertRoutes(d DeviceCertDeps) []httpapi.Route {
	return append(DeviceCertUserRoutes(d), DeviceCertSelfRoutes(d)...)
}

// DeviceCertUserRoutes are the user's routes (under
// /apiv1/users/{user_id}/ and /apiv1/me/):
//
//	POST   devices/{device_id}/certificates {"certificate_id": N}   assign (201 new, 200 again; certificates:assign)
//	GET    devices/{device_id}/certificates                          the device's assignments (devices:read)
//	DELETE devices/{device_id}/certificates/{certificate_id}         unassign (204; certificates:assign)
//	GET    devices/{device_id}/certificates/{certificate_id}         one assignment (devices:read)
//	GET    devices/{device_id}/certificates/{certificate_id}/bundle  the detail the device gets, never a key (devices:read)
//	POST   certificate-assign {"device_public_id", "certificate_id"?} the API-key automation of §4.4 (certificates:assign)
//
// A user reaches only their own devices and certificates (404).
func DeviceCertUserRoutes(d DeviceCertDeps) []httpapi.Route {
	rt := deviceCertRoutes{d}
	assign := httpapi.Scope{ObType: "certificates", Action: "assign"}
	var rs []httpapi.Route
	for _, r := range []struct {
		method, suffix string
		scope          httpapi.Scope
		h              http.Handler
	}{
		{"POST", "devices/{" + deviceParam + "}/certificates", assign, httpapi.Endpoint(rt.assign)},
		{"GET", "devices/{" + deviceParam + "}/certificates",
			httpapi.Scope{ObType: "devices", Action: "read", ObIDParam: deviceParam}, httpapi.Endpoint(rt.list)},
		{"DELETE", "devices/{" + deviceParam + "}/certificates/{" + certificateParam + "}",
			httpapi.Scope{ObType: "certificates", Action: "assign", ObIDParam: certificateParam}, httpapi.Endpoint(rt.unassign)},
		{"GET", "devices/{" + deviceParam + "}/certificates/{" + certificateParam + "}",
			httpapi.Scope{ObType: "devices", Action: "read", ObIDParam: deviceParam}, httpapi.Endpoint(rt.getAssignment)},
		{"GET", "devices/{" + deviceParam + "}/certificates/{" + certificateParam + "}/bundle",
			httpapi.Scope{ObType: "devices", Action: "read", ObIDParam: deviceParam}, httpapi.Endpoint(rt.bundle)},
		{"POST", "certificate-assign", assign, httpapi.Endpoint(rt.automationAssign)},
	} {
		rs = append(rs, userRoutes(d.Guard, r.method, r.suffix, r.scope, r.h)...)
	}
	return rs
}

// DeviceCertSelfRoutes are the device's routes, behind its access token
// (httpapi.DeviceAuth with d.Verifier), for the /apiv1/devices/self/*
// group:
//
//	GET /apiv1/devices/self/certificates/{certificate_id}                   the detail (never a key)
//	GET /apiv1/devices/self/certificates/{certificate_id}/deploy-materials  the key, wrapped to the device (§3.3-§3.5)
//
// A device reads only the certificates assigned to it (404 otherwise); a
// device that is gone or not active is refused (403).
func DeviceCertSelfRoutes(d DeviceCertDeps) []httpapi.Route {
	rt := deviceCertRoutes{d}
	self := "/apiv1/devices/self/certificates/{" + certificateParam + "}"
	return []httpapi.Route{
		{Method: "GET", Path: self, Handler: httpapi.DeviceAuth(d.Verifier, httpapi.Endpoint(rt.detail))},
		{Method: "GET", Path: self + "/deploy-materials", Handler: httpapi.DeviceAuth(d.Verifier, httpapi.Endpoint(rt.materials))},
	}
}

// assignmentView is an assignment in this dialect (times in Unix
// seconds). wrap_ready says the device's wrap of the key was made.
type assignmentView struct {
	DeviceID      int64 `json:"device_id"`
	CertificateID int64 `json:"certificate_id"`
	WrapReady     bool  `json:"wrap_ready"`
	CreatedAt     int64 `json:"created_at"`
	UpdatedAt     int64 `json:"updated_at"`
}

func viewAssignment(a devices.Assignment) assignmentView {
	return assignmentView{DeviceID: a.DeviceID, CertificateID: a.CertID, WrapReady: a.WrapIssueID != 0 && len(a.EncDataKey) > 0,
		CreatedAt: a.CreatedAt.Unix(), UpdatedAt: a.UpdatedAt.Unix()}
}

// mayAssign refuses an API key without certificates:assign on certID.
func mayAssign(r *http.Request, certID int64) error {
	p, _ := identity.PrincipalFrom(r.Context())
	if !p.Allows("certificates", strconv.FormatInt(certID, 10), "assign") {
		return apperr.New(apperr.Forbidden, "API key lacks permission certificates:assign on certificate %d", certID)
	}
	return nil
}

func (rt deviceCertRoutes) assign(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	deviceID, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		CertificateID int64 `json:"certificate_id"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.CertificateID <= 0 {
		return 0, nil, apperr.InvalidField("certificate_id", "is required: the id of one of your certificates")
	}
	if err := mayAssign(r, req.CertificateID); err != nil {
		return 0, nil, err
	}
	as, created, err := rt.Assignments.Assign(r.Context(), httpapi.TargetUser(r.Context()), deviceID, req.CertificateID)
	if err != nil {
		return 0, nil, err
	}
	return createdStatus(created), viewAssignment(as), nil
}

func (rt deviceCertRoutes) list(w http.ResponseWriter, r *http.Request) (int, any, error) {
	return listOnDevice(w, r, rt.Devices, rt.Assignments.List, viewAssignment)
}

// listOnDevice answers what list gives for the user's device of the
// route, as views, with X-Total-Count. Errors: NotFound for a device that
// is not the user's.
func listOnDevice[T, V any](w http.ResponseWriter, r *http.Request, reg *devices.Service,
	list func(ctx context.Context, userID, deviceID int64) ([]T, error), view func(T) V) (int, any, error) {
	deviceID, err := httpapi.PathID(r, deviceParam)
	if err != nil {
		return 0, nil, err
	}
	ctx, userID := r.Context(), httpapi.TargetUser(r.Context())
	if _, err := reg.Get(ctx, userID, deviceID); err != nil {
		return 0, nil, err
	}
	items, err := list(ctx, userID, deviceID)
	if err != nil {
		return 0, nil, err
	}
	out := make([]V, len(items))
	for i, it := range items {
		out[i] = view(it)
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(out)))
	return http.StatusOK, out, nil
}

// createdStatus is 201 for something new, 200 for what was there.
func createdStatus(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
}

func (rt deviceCertRoutes) unassign(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	userID, deviceID, certID, err := onUserDevice(r, rt.Devices, certificateParam)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, rt.Assignments.Unassign(r.Context(), userID, deviceID, certID)
}

// onUserDevice reads the route's target user, {device_id} and the object
// id in param, and checks the device is the user's. Errors: Invalid for
// a bad id; NotFound for another user's or a missing device.
func onUserDevice(r *http.Request, reg *devices.Service, param string) (userID, deviceID, id int64, err error) {
	if deviceID, err = httpapi.PathID(r, deviceParam); err != nil {
		return 0, 0, 0, err
	}
	if id, err = httpapi.PathID(r, param); err != nil {
		return 0, 0, 0, err
	}
	userID = httpapi.TargetUser(r.Context())
	if _, err := reg.Get(r.Context(), userID, deviceID); err != nil {
		return 0, 0, 0, err
	}
	return userID, deviceID, id, nil
}

// automationAssign is the agent's API-key automation (§4.4): assign to the
// device of device_public_id the certificate certificate_id or, without
// one, every certificate the API key is granted certificates:assign on by
// id (a key made for one certificate assigns that one). A session, or a
// key whose assign grant is "*", must name the certificate.
func (rt deviceCertRoutes) automationAssign(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	var req struct {
		PublicID      string `json:"device_public_id"`
		CertificateID int64  `json:"certificate_id"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.PublicID == "" {
		return 0, nil, apperr.InvalidField("device_public_id", "is required: the device's public id")
	}
	ids := []int64{req.CertificateID}
	if req.CertificateID < 0 {
		return 0, nil, apperr.InvalidField("certificate_id", "must be the id of one of your certificates")
	}
	if req.CertificateID == 0 {
		if ids = assignGrants(r); len(ids) == 0 {
			return 0, nil, apperr.InvalidField("certificate_id",
				"is required unless the API key is granted certificates:assign on specific certificates")
		}
	}
	for _, id := range ids {
		if err := mayAssign(r, id); err != nil {
			return 0, nil, err
		}
	}
	ctx, userID := r.Context(), httpapi.TargetUser(r.Context())
	d, err := rt.Devices.ByPublicID(ctx, userID, req.PublicID)
	if err != nil {
		return 0, nil, err
	}
	for _, id := range ids {
		if _, _, err := rt.Assignments.Assign(ctx, userID, d.ID, id); err != nil {
			return 0, nil, err
		}
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = strconv.FormatInt(id, 10)
	}
	return http.StatusOK, map[string]any{"status": "assigned", "device_id": d.ID, "certificate_ids": ids,
		"message": fmt.Sprintf("certificate %s assigned to device %s", strings.Join(names, ", "), d.PublicID)}, nil
}

// assignGrants is the certificate ids an API key's certificates:assign
// grants name ("*" names none).
func assignGrants(r *http.Request) []int64 {
	p, ok := identity.PrincipalFrom(r.Context())
	if !ok || p.Kind != identity.KindAPIKey {
		return nil
	}
	var ids []int64
	for _, perm := range p.Permissions {
		if perm.ObType != "certificates" || !slices.Contains(perm.Actions, "assign") {
			continue
		}
		if id, err := strconv.ParseInt(perm.ObID, 10, 64); err == nil && id > 0 && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// deviceCertView is the detail the agent reads (§3.2): the certificate
// and its chain, never a key.
type deviceCertView struct {
	ID                  int64    `json:"id"`
	DomainName          string   `json:"domain_name"`
	SANs                []string `json:"sans"`
	CertificatePEM      string   `json:"certificate_pem"`
	ChainPEM            string   `json:"chain_pem"`
	FullchainPEM        string   `json:"fullchain_pem"`
	KeyDistPolicy       string   `json:"key_dist_policy"`
	ServerDecryptExport bool     `json:"server_decrypt_export"`
	Status              string   `json:"status"`
	IssueID             int64    `json:"issue_id"`
	NotBefore           int64    `json:"not_before"`
	NotAfter            int64    `json:"not_after"`
	CreatedAt           int64    `json:"created_at"`
	UpdatedAt           int64    `json:"updated_at"`
}

// self reads the device's identity and the certificate id, and checks the
// device may read the certificate.
func (rt deviceCertRoutes) self(r *http.Request) (userID, deviceID, certID int64, err error) {
	deviceID, userID, ok := httpapi.DeviceFromContext(r.Context())
	if !ok {
		return 0, 0, 0, apperr.New(apperr.Unauthorized, "a device access token is required")
	}
	if certID, err = certificateID(r); err != nil {
		return 0, 0, 0, err
	}
	return userID, deviceID, certID, nil
}

func (rt deviceCertRoutes) detail(w http.ResponseWriter, r *http.Request) (int, any, error) {
	userID, deviceID, certID, err := rt.self(r)
	if err != nil {
		return 0, nil, err
	}
	if _, _, _, err := rt.Assignments.ForDevice(r.Context(), userID, deviceID, certID); err != nil {
		return 0, nil, err
	}
	return rt.certDetail(w, r, userID, certID)
}

// certDetail answers the detail of the user's certificate as its devices
// get it (§3.2): the certificate and its chain, never a key.
func (rt deviceCertRoutes) certDetail(w http.ResponseWriter, r *http.Request, userID, certID int64) (int, any, error) {
	ctx := r.Context()
	c, err := rt.Certs.Get(ctx, userID, certID)
	if err != nil {
		return 0, nil, err
	}
	ex, err := rt.Export.Export(ctx, userID, certID, false)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Cache-Control", "no-store")
	sans := c.SANs
	if sans == nil {
		sans = []string{}
	}
	return http.StatusOK, deviceCertView{ID: c.ID, DomainName: c.DomainName, SANs: sans, CertificatePEM: ex.CertPEM,
		ChainPEM: ex.ChainPEM, FullchainPEM: ex.FullChainPEM, KeyDistPolicy: c.Policy, ServerDecryptExport: c.ServerDecryptExport,
		Status: c.Status, IssueID: ex.IssueID, NotBefore: ex.NotBefore.Unix(), NotAfter: ex.NotAfter.Unix(),
		CreatedAt: c.CreatedAt.Unix(), UpdatedAt: c.UpdatedAt.Unix()}, nil
}

// assignment reads the device and certificate of a user route and the
// assignment between them. Errors: NotFound.
func (rt deviceCertRoutes) assignment(r *http.Request) (userID int64, as devices.Assignment, err error) {
	userID, deviceID, certID, err := onUserDevice(r, rt.Devices, certificateParam)
	if err != nil {
		return 0, as, err
	}
	as, err = rt.Assignments.Get(r.Context(), userID, deviceID, certID)
	return userID, as, err
}

// getAssignment is one certificate on a device.
func (rt deviceCertRoutes) getAssignment(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	_, as, err := rt.assignment(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, viewAssignment(as), nil
}

// bundle is what the device gets as the detail of a certificate on it
// (never the key, which only the device can open).
func (rt deviceCertRoutes) bundle(w http.ResponseWriter, r *http.Request) (int, any, error) {
	userID, as, err := rt.assignment(r)
	if err != nil {
		return 0, nil, err
	}
	return rt.certDetail(w, r, userID, as.CertID)
}

// materials serves deploy-materials (§3.3): the AEAD fields for HYBRID and
// DEVICE_REQUIRED (409 WRAP_PENDING until the device's wrap exists), the
// key in the clear for MASTER_ONLY with server_decrypt_export (403
// EXPORT_FORBIDDEN without).
func (rt deviceCertRoutes) materials(w http.ResponseWriter, r *http.Request) (int, any, error) {
	userID, deviceID, certID, err := rt.self(r)
	if err != nil {
		return 0, nil, err
	}
	ctx := r.Context()
	m, err := rt.Assignments.Materials(ctx, userID, deviceID, certID)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Cache-Control", "no-store")
	b64 := base64.StdEncoding.EncodeToString
	if m.Scheme == devices.SchemeAEAD {
		return http.StatusOK, map[string]any{"enc_scheme": devices.SchemeAEAD, "wrap_alg": "x25519",
			"device_keyfp_b64": b64(m.DeviceKeyFP), "enc_data_key_b64": b64(m.EncDataKey), "enc_privkey_b64": b64(m.EncPrivKey),
			"privkey_nonce_b64": b64(m.Nonce), "privkey_tag_b64": b64(m.Tag)}, nil
	}
	defer clear(m.PrivateKeyDER)
	ex, err := rt.Export.Export(ctx, userID, certID, false)
	if err != nil {
		return 0, nil, err
	}
	if ex.IssueID != m.IssueID {
		// Renewed between the two reads: the key and the certificate
		// would not match. The agent retries a 409 with WRAP_PENDING.
		return 0, nil, apperr.New(apperr.Conflict, "WRAP_PENDING: certificate %d is being renewed; retry shortly", certID).
			WithKey(devices.ReasonWrapPending)
	}
	return http.StatusOK, map[string]any{"enc_scheme": devices.SchemePlaintext, "private_key_der_b64": b64(m.PrivateKeyDER),
		"certificate_pem": ex.CertPEM}, nil
}
