"""An http.server that only holders of a key can reach.

    python3 http_server.py KEYFILE [PORT]

Serves the current directory on 127.0.0.1:PORT (default 8080). A client
connects with hmacauth.HTTPConnection (see go_http_client.py), or through
the hmacauth tunnel command, or with the Go package's HTTP client.
"""

import http.server
import socketserver
import sys

import hmacauth


class Server(hmacauth.HmacAuthMixIn, socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main() -> None:
    ctx = hmacauth.Context(hmacauth.load_keys(sys.argv[1]), hmacauth.Mode.SEALED)
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8080
    with Server(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler) as srv:
        srv.hmacauth_context = ctx
        print("serving on", srv.server_address, flush=True)
        srv.serve_forever()


if __name__ == "__main__":
    main()
