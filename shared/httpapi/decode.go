package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/certfleet/certfleet/shared/apperr"
)

// MaxBodyBytes caps every request body; the router enforces it and a larger
// body is answered with 413.
const MaxBodyBytes = 1 << 20

// DecodeJSON reads the request body as one JSON value into dst. Failures are
// application errors that name the problem: an empty body, a syntax error
// with its offset, a value of the wrong type with its field, trailing data,
// or a body over MaxBodyBytes (TooLarge).
func DecodeJSON(r *http.Request, dst any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		if tooLarge(err) {
			return jsonError(err)
		}
		return apperr.New(apperr.BadJSON, "request body has data after the JSON value")
	}
	return nil
}

func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case tooLarge(err):
		return apperr.New(apperr.TooLarge, "request body is larger than %d bytes", MaxBodyBytes)
	case errors.Is(err, io.EOF):
		return apperr.New(apperr.BadJSON, "request body is empty; expected a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apperr.New(apperr.BadJSON, "request body ends in the middle of a JSON value")
	case errors.As(err, &syntax):
		return apperr.New(apperr.BadJSON, "malformed JSON at byte %d: %s", syntax.Offset, syntax.Error())
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return apperr.New(apperr.BadJSON, "request body must be %s, not %s", kindName(typ.Type.Kind().String()), typ.Value)
		}
		return &apperr.Error{Code: apperr.BadJSON, Field: field,
			Message: fmt.Sprintf("field %q must be %s, not %s", field, kindName(typ.Type.Kind().String()), typ.Value)}
	default:
		return apperr.New(apperr.BadJSON, "malformed JSON: %v", err)
	}
}

func tooLarge(err error) bool {
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
}

// kindName turns a Go kind into the JSON word a client understands.
func kindName(kind string) string {
	switch {
	case kind == "struct" || kind == "map":
		return "an object"
	case kind == "slice" || kind == "array":
		return "an array"
	case kind == "string":
		return "a string"
	case kind == "bool":
		return "a boolean"
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "a number"
	default:
		return kind
	}
}
