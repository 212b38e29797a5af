package acmeapi

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/certfleet/certfleet/shared/apperr"
	"github.com/certfleet/certfleet/shared/identity"
)

// validate checks the `binding` tags of the request struct *req and
// answers what fails in the words of the seed's (gin) validator: one line
// per failing field, "Key: '<Struct>.<Field>' Error:Field validation for
// '<Field>' failed on the '<tag>' tag", the first failing tag of each
// field. The tags understood are "required" (not the zero value; a string
// of only spaces is missing too) and "email" (a valid address, by the same
// rule the service applies; an empty value passes, as "required" is its
// own tag). The error is apperr.Invalid (code 2002) naming the first
// failing field by its JSON name.
func validate(req any) error {
	v := reflect.ValueOf(req).Elem()
	t := v.Type()
	var lines []string
	firstField := ""
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		for _, tag := range strings.Split(f.Tag.Get("binding"), ",") {
			if tag == "" || passes(tag, fv) {
				continue
			}
			lines = append(lines, fmt.Sprintf("Key: '%s.%s' Error:Field validation for '%s' failed on the '%s' tag",
				t.Name(), f.Name, f.Name, tag))
			if firstField == "" {
				firstField, _, _ = strings.Cut(f.Tag.Get("json"), ",")
			}
			break
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return &apperr.Error{Code: apperr.Invalid, Field: firstField, Message: strings.Join(lines, "\n")}
}

func passes(tag string, v reflect.Value) bool {
	switch tag {
	case "required":
		if v.Kind() == reflect.String {
			return strings.TrimSpace(v.String()) != ""
		}
		return !v.IsZero()
	case "email":
		if v.String() == "" {
			return true
		}
		_, err := identity.NormalizeEmail(v.String())
		return err == nil
	default:
		panic("acmeapi: unknown binding tag " + tag)
	}
}
