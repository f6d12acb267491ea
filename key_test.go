package hmacauth

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestKeyValidation(t *testing.T) {
	t.Parallel()
	secret := seededBytes("secret", MinSecretLen)
	for _, tc := range []struct {
		key  Key
		want error
	}{
		{Key{ID: "ok", Secret: secret}, nil},
		{Key{ID: strings.Repeat("x", MaxKeyIDLen), Secret: secret}, nil},
		{Key{ID: "!~", Secret: secret}, nil},
		{Key{ID: "", Secret: secret}, ErrConfig},
		{Key{ID: strings.Repeat("x", MaxKeyIDLen+1), Secret: secret}, ErrConfig},
		{Key{ID: "with space", Secret: secret}, ErrConfig},
		{Key{ID: "tab\t", Secret: secret}, ErrConfig},
		{Key{ID: "nul\x00", Secret: secret}, ErrConfig},
		{Key{ID: "del\x7f", Secret: secret}, ErrConfig},
		{Key{ID: "é", Secret: secret}, ErrConfig},
		{Key{ID: "short", Secret: secret[:MinSecretLen-1]}, ErrWeakKey},
		{Key{ID: "none"}, ErrWeakKey},
	} {
		err := tc.key.Validate()
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("Validate(%q, %d-byte secret) = %v, want %v", tc.key.ID, len(tc.key.Secret), err, tc.want)
		}
	}
	err := Key{ID: "short", Secret: []byte("hunter2")}.Validate()
	for _, want := range []string{`"short"`, "7-byte", "32", "keygen", "NewKey"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("weak key error %q does not say %q", err, want)
		}
	}
	checkNoSecret(t, err.Error(), []byte("hunter2"))
}

func TestNewKey(t *testing.T) {
	t.Parallel()
	a, err := NewKey("app")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewKey("app")
	if a.ID != "app" || len(a.Secret) != MinSecretLen || a.Validate() != nil {
		t.Errorf("NewKey = %v", a)
	}
	if bytes.Equal(a.Secret, b.Secret) {
		t.Error("two NewKey calls returned the same secret")
	}
	if _, err := NewKey("bad id"); !errors.Is(err, ErrConfig) {
		t.Errorf("NewKey(bad id) = %v, want ErrConfig", err)
	}
}

func TestKeyNeverShowsSecret(t *testing.T) {
	t.Parallel()
	k := testKey("visible-id")
	cfg := &Config{Keys: []Key{k}}
	var outs []string
	for _, format := range printVerbs {
		outs = append(outs, fmt.Sprintf(format, k), fmt.Sprintf(format, &k), fmt.Sprintf(format, []Key{k}))
	}
	outs = append(outs, fmt.Sprintf("%v %+v", cfg, cfg), fmt.Sprint(k), k.String(), k.GoString())
	var buf syncBuffer
	newTextLogger(&buf).Info("key", "key", k, "keys", []Key{k})
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("key", "key", k, "ptr", &k)
	outs = append(outs, buf.String())
	for _, out := range outs {
		checkNoSecret(t, out, k.Secret)
	}
	if !strings.Contains(k.String(), "visible-id") || !strings.Contains(buf.String(), "visible-id") {
		t.Errorf("the key ID should be shown: %q, %q", k.String(), buf.String())
	}
}
