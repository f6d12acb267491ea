package hmacauth

import (
	"net"
	"strings"
	"testing"
)

func TestServerHelloUnknownMode(t *testing.T) {
	k := testKey("test-key")
	keys, err := configWith(k).check()
	if err != nil {
		t.Fatal(err)
	}
	addr := startRawServer(t, func(c net.Conn) {
		h := &handshake{}
		h.runServer(c, keys, hsParams{mode: modeMax + 1}) // ends when the client closes
	})
	_, err = Dial("tcp", addr.String(), configWith(k))
	mustBe(t, err, ErrProtocol)
	if msg := err.Error(); !strings.Contains(msg, "mode 3, which this client does not know") || strings.Contains(msg, "at least") {
		t.Errorf("error %q does not say that the mode is unknown", msg)
	}
}
