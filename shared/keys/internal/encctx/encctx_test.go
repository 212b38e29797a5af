package encctx

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func TestEncodeGolden(t *testing.T) {
	cases := []struct {
		in   map[string]string
		want string
	}{
		{nil, "00000000"},
		{map[string]string{}, "00000000"},
		{map[string]string{"a": ""}, "00000001" + "00000001" + "61" + "00000000"},
		{
			map[string]string{"table": "certs", "id": "42"},
			"00000002" +
				"00000002" + hex.EncodeToString([]byte("id")) + "00000002" + hex.EncodeToString([]byte("42")) +
				"00000005" + hex.EncodeToString([]byte("table")) + "00000005" + hex.EncodeToString([]byte("certs")),
		},
	}
	for _, c := range cases {
		got := hex.EncodeToString(Encode(c.in))
		if got != c.want {
			t.Errorf("Encode(%q) = %s, want %s", c.in, got, c.want)
		}
		if n := Size(c.in); n != len(Encode(c.in)) {
			t.Errorf("Size(%q) = %d, want %d", c.in, n, len(Encode(c.in)))
		}
	}
}

func TestEncodeInjective(t *testing.T) {
	distinct := []map[string]string{
		nil,
		{"": ""},
		{"a": ""},
		{"": "a"},
		{"ab": "c"},
		{"a": "bc"},
		{"a": "b", "c": "d"},
		{"a": "bcd"},
		{"a": "b\x00c\x00d"},
		{"a=b": "c"},
		{"a": "b=c"},
		{"A": "b"},
	}
	for i, x := range distinct {
		for j, y := range distinct {
			if i != j && bytes.Equal(Encode(x), Encode(y)) {
				t.Errorf("Encode(%q) == Encode(%q)", x, y)
			}
		}
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	got := Append([]byte("hdr"), map[string]string{"k": "v"})
	if !bytes.HasPrefix(got, []byte("hdr")) || !bytes.Equal(got[3:], Encode(map[string]string{"k": "v"})) {
		t.Fatalf("Append = %x", got)
	}
}
