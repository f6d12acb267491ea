package mpcompat

import (
	"context"
	"errors"
	"net"
	"testing"
)

func TestConfigErrors(t *testing.T) {
	bad := map[string]Config{
		"empty key":      {},
		"md5 digest":     {AuthKey: keyA, Digest: DigestMD5},
		"unknown digest": {AuthKey: keyA, Digest: "sha512"},
		"negative cap":   {AuthKey: keyA, MaxHandshakes: -1},
		"negative queue": {AuthKey: keyA, AcceptQueue: -1},
	}
	for name, cfg := range bad {
		t.Run(name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer inner.Close()
			if _, err := NewListener(inner, &cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("NewListener: %v, want ErrConfig", err)
			}
			d := Dialer{Config: &cfg}
			if _, err := d.Dial("tcp", inner.Addr().String()); !errors.Is(err, ErrConfig) {
				t.Errorf("Dial: %v, want ErrConfig", err)
			}
			a, b := net.Pipe() // the check comes before any I/O
			defer a.Close()
			defer b.Close()
			if err := ServerHandshake(context.Background(), a, &cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("ServerHandshake: %v, want ErrConfig", err)
			}
			if err := ClientHandshake(context.Background(), b, &cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("ClientHandshake: %v, want ErrConfig", err)
			}
		})
	}
	if _, err := Listen("tcp", "127.0.0.1:0", nil); !errors.Is(err, ErrConfig) {
		t.Errorf("Listen with no key: %v, want ErrConfig", err)
	}
	if _, err := Dial("tcp", "127.0.0.1:1", nil); !errors.Is(err, ErrConfig) {
		t.Errorf("Dial with no key: %v, want ErrConfig", err)
	}
	if _, err := NewListener(nil, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("NewListener(nil Config): %v, want ErrConfig", err)
	}
}
