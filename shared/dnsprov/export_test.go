package dnsprov

// Known reports whether lego lists name as a setting of the provider code
// (refused settings included).
func Known(code, name string) bool {
	e, ok := catalogByCode[code]
	return ok && e.known[name]
}

// CredentialSets and RefusedNames expose the policy tables to tests.
var (
	CredentialSets = credentialSets
	RefusedNames   = refusedNames
	Refusal        = refusal
)

// Unusable exposes the providers that cannot be used.
var Unusable = unusable
