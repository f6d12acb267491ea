"""A Python client of a Go http.Server behind hmacauth.Listen.

    python3 go_http_client.py KEYFILE HOST:PORT [PATH]

The Go side:

    ln, _ := hmacauth.Listen("tcp", ":8443", &hmacauth.Config{Keys: keys, Mode: hmacauth.ModeSealed})
    http.Serve(ln, handler)

Prints the response status and body; exits 1 if the handshake is refused.
"""

import sys

import hmacauth


def main() -> int:
    ctx = hmacauth.Context(hmacauth.load_keys(sys.argv[1]), hmacauth.Mode.SEALED)
    host, _, port = sys.argv[2].rpartition(":")
    path = sys.argv[3] if len(sys.argv) > 3 else "/"
    conn = hmacauth.HTTPConnection(host, int(port), context=ctx, timeout=10)
    try:
        for _ in range(2):  # two requests on one kept-alive connection
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            print(resp.status, body.decode("utf-8", "replace"))
    except hmacauth.HmacAuthError as e:
        print("refused:", e, file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
