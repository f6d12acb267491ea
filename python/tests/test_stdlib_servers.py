"""The socketserver mix-in: http.server and xmlrpc.server authenticated
without other changes, and hmacauth.HTTPConnection."""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import unittest
import xmlrpc.client
import xmlrpc.server

from _support import WAIT, make_key, modes

import hmacauth
from hmacauth import Context


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = ("hello %s" % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class HTTPServer(hmacauth.HmacAuthMixIn, socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class XMLRPCServer(hmacauth.HmacAuthMixIn, socketserver.ThreadingMixIn, xmlrpc.server.SimpleXMLRPCServer):
    daemon_threads = True


def serve(srv: socketserver.BaseServer) -> threading.Thread:
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    return t


class MixInTests(unittest.TestCase):
    def test_http_server(self) -> None:
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                k = make_key()
                srv = HTTPServer(("127.0.0.1", 0), Handler)
                srv.hmacauth_context = Context([k], mode, forward_secrecy=fs)
                t = serve(srv)
                try:
                    conn = hmacauth.HTTPConnection("127.0.0.1", srv.server_address[1], context=Context([k]), timeout=WAIT)
                    for path in ("/a", "/b"):  # keep-alive: two requests, one connection
                        conn.request("GET", path)
                        r = conn.getresponse()
                        self.assertEqual((r.status, r.read()), (200, b"hello " + path.encode()))
                    self.assertEqual(conn.sock.connection_state().mode, mode)
                    conn.close()
                    # A plain HTTP client gets nothing.
                    with socket.create_connection(srv.server_address, timeout=WAIT) as plain:
                        plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
                        self.assertEqual(plain.recv(100), b"")
                    with self.assertRaises(hmacauth.AuthFailed):
                        hmacauth.HTTPConnection("127.0.0.1", srv.server_address[1], context=Context([make_key("other")])).connect()
                finally:
                    srv.shutdown()
                    srv.server_close()
                    t.join(WAIT)

    def test_http_connection_close_response(self) -> None:
        # HTTP/1.0 with Connection: close: http.client closes its socket while
        # the response (a makefile reader) still reads it; the records must
        # still be read until the reader is closed too.
        class Closing(Handler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = b"y" * 300000
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                k = make_key()
                srv = HTTPServer(("127.0.0.1", 0), Closing)
                srv.hmacauth_context = Context([k], mode, forward_secrecy=fs)
                t = serve(srv)
                try:
                    conn = hmacauth.HTTPConnection("127.0.0.1", srv.server_address[1], context=Context([k]), timeout=WAIT)
                    conn.request("GET", "/")
                    r = conn.getresponse()
                    self.assertTrue(r.will_close)
                    self.assertEqual(r.read(), b"y" * 300000)
                    conn.close()
                finally:
                    srv.shutdown()
                    srv.server_close()
                    t.join(WAIT)

    def test_xmlrpc_server(self) -> None:
        k = make_key()
        srv = XMLRPCServer(("127.0.0.1", 0), logRequests=False)
        srv.hmacauth_context = Context([k])
        srv.register_function(lambda a, b: a + b, "add")
        t = serve(srv)
        port = srv.server_address[1]

        class Transport(xmlrpc.client.Transport):
            def make_connection(self, host):  # type: ignore[no-untyped-def]
                return hmacauth.HTTPConnection("127.0.0.1", port, context=Context([k]), timeout=WAIT)

        try:
            proxy = xmlrpc.client.ServerProxy("http://127.0.0.1:%d/" % port, transport=Transport())
            self.assertEqual(proxy.add(2, 3), 5)
        finally:
            srv.shutdown()
            srv.server_close()
            t.join(WAIT)


if __name__ == "__main__":
    unittest.main()
