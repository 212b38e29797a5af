package certctrl

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/devices"
	"github.com/certfleet/certfleet/shared/httpapi"
)

// CursorTrimmedCode is the updates poll's error.code for a cursor the
// stream no longer serves (protocol §2.1): the agent clears its cursor,
// resyncs in full and polls again.
const CursorTrimmedCode = 40901

// MaxUpdatesWait is the longest long poll, in seconds.
const MaxUpdatesWait = 30

// UpdatesPath is the agent's update poll.
const UpdatesPath = "/apiv1/devices/self/updates"

// DeviceSelfRoutes are the routes a device calls as itself, behind
// DeviceAuth with v: GET /apiv1/devices/self/updates (protocol §2.1), the
// poll of the device's update stream.
//
// Query: cursor (or If-None-Match, which wins: one pair of quotes and a W/
// prefix stripped; neither means the start, 0-0), limit 1..100 (20), wait
// 0..30 seconds (0: answer at once; else held until a signal arrives or
// wait passes). 200 {"data":{"cursor","signals"}} or 204 without a body,
// both with ETag "<cursor>", Cache-Control: no-store and X-Poll-Interval
// (the stream's PollInterval in seconds; LongPollInterval for a long
// poll, whose hold already paced the agent). A trimmed cursor is 409 with
// error.code 40901 and params action full_resync; a bad parameter 400
// naming it; a deleted device 401.
func DeviceSelfRoutes(stream *devices.Stream, v httpapi.DeviceVerifier) []httpapi.Route {
	h := selfUpdates{stream: stream, interval: strconv.Itoa(max(1, int(stream.PollInterval()/time.Second)))}
	return []httpapi.Route{{Method: http.MethodGet, Path: UpdatesPath, Handler: httpapi.DeviceAuth(v, h)}}
}

// LongPollInterval is the X-Poll-Interval, in seconds, of a long poll's
// answer: an agent that long-polls asks again at once (the request was
// held at the server), one that does not keeps the stream's interval.
const LongPollInterval = 1

type selfUpdates struct {
	stream   *devices.Stream
	interval string
}

func (h selfUpdates) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	deviceID, _, ok := httpapi.DeviceFromContext(r.Context())
	if !ok {
		httpapi.WriteError(w, r, apperr.New(apperr.Unauthorized, "a device access token is required"))
		return
	}
	q := r.URL.Query()
	cursor := q.Get("cursor")
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		cursor = selfUpdatesETag(inm)
	}
	limit, err := selfUpdatesInt(q.Get("limit"), "limit", devices.DefaultStreamLimit, 1, devices.MaxStreamLimit)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	wait, err := selfUpdatesInt(q.Get("wait"), "wait", 0, 0, MaxUpdatesWait)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	page, err := h.stream.Wait(r.Context(), deviceID, cursor, limit, time.Duration(wait)*time.Second)
	var trimmed *devices.CursorTrimmedError
	if errors.As(err, &trimmed) {
		httpapi.WriteErrorCode(w, r, err, CursorTrimmedCode, map[string]any{
			"action": "full_resync", "reset_cursor": true, "signal_type": devices.SignalResync,
			"reason": "cursor_trimmed", "earliest_retained_id": trimmed.EarliestRetained,
		})
		return
	}
	if err != nil {
		if apperr.CodeOf(err) == apperr.Unauthorized {
			hdr.Set("WWW-Authenticate", `Bearer realm="certfleet", error="invalid_token"`)
		}
		httpapi.WriteError(w, r, err)
		return
	}
	hdr.Set("ETag", `"`+page.Cursor+`"`)
	if wait > 0 {
		hdr.Set("X-Poll-Interval", strconv.Itoa(LongPollInterval))
	} else {
		hdr.Set("X-Poll-Interval", h.interval)
	}
	if len(page.Signals) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	httpapi.WriteData(w, http.StatusOK, page)
}

// selfUpdatesETag is the cursor in an If-None-Match value: W/ and one pair
// of quotes stripped.
func selfUpdatesETag(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	return v
}

// selfUpdatesInt reads an integer query parameter in lo..hi; "" is def.
func selfUpdatesInt(v, name string, def, lo, hi int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, apperr.InvalidField(name, "must be an integer from %d to %d", lo, hi)
	}
	return n, nil
}
