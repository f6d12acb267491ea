package hmacauth

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestConfigClone: Clone copies every exported field (a field added later
// and forgotten in Clone fails here, as crypto/tls checks its Config), and
// the copy of a used Config is a Config of its own: it dials the
// original's listener, which a Config refuses of its own dials.
func TestConfigClone(t *testing.T) {
	t.Parallel()
	k := testKey("clone")
	ring, err := NewKeyring(k)
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{
		Keys:               []Key{k},
		Keyring:            ring,
		Mode:               ModeSealed,
		ForwardSecrecy:     true,
		KeyShareLifetime:   time.Minute,
		HandshakeTimeout:   time.Hour,
		MaxHandshakes:      7,
		MaxHandshakesPerIP: 3,
		AcceptQueue:        5,
		Logger:             newTextLogger(new(syncBuffer)),
		OnHandshake:        func(HandshakeEvent) {},
	}
	v, cv := reflect.ValueOf(c).Elem(), reflect.ValueOf(c.Clone()).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		if v.Field(i).IsZero() {
			t.Fatalf("the test leaves Config.%s zero: set it, so that Clone is checked for it", f.Name)
		}
		var same bool
		if f.Type.Kind() == reflect.Func {
			same = v.Field(i).Pointer() == cv.Field(i).Pointer()
		} else {
			same = reflect.DeepEqual(v.Field(i).Interface(), cv.Field(i).Interface())
		}
		if !same {
			t.Errorf("Clone did not copy Config.%s", f.Name)
		}
	}
	cl := c.Clone()
	cl.Keys[0] = testKey("other")
	if c.Keys[0].ID != "clone" {
		t.Error("the clone's Keys share the original's slice")
	}
	if (*Config)(nil).Clone() != nil {
		t.Error("Clone of a nil Config is not nil")
	}

	orig := configWith(k)
	s := startEcho(t, orig)
	checkGoodClient(t, startEcho(t, configWith(k)), orig) // orig is used: its keys are derived
	checkGoodClient(t, s, orig.Clone())
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	good := testKey("a")
	for name, cfg := range map[string]*Config{
		"nil":          nil,
		"no keys":      {},
		"empty keys":   {Keys: []Key{}},
		"duplicate ID": {Keys: []Key{good, {ID: "a", Secret: seededBytes("other", 32)}}},
		"bad ID":       {Keys: []Key{good, {ID: "b c", Secret: good.Secret}}},
		"weak key":     {Keys: []Key{good, {ID: "weak", Secret: []byte("x")}}},
	} {
		_, err := cfg.keySet()
		if !errors.Is(err, ErrConfig) && !errors.Is(err, ErrWeakKey) {
			t.Errorf("%s: %v, want ErrConfig or ErrWeakKey", name, err)
		}
		if name == "duplicate ID" && !strings.Contains(err.Error(), "twice") {
			t.Errorf("duplicate ID error %q does not say so", err)
		}
		if cfg != nil {
			// Client and Server report the same error from Handshake.
			rc, _ := pipeTCP(t)
			if herr := Client(rc, cfg).Handshake(); !errors.Is(herr, ErrConfig) && !errors.Is(herr, ErrWeakKey) {
				t.Errorf("%s: Handshake = %v", name, herr)
			}
		}
	}
}
