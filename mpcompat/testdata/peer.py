"""A multiprocessing.connection peer for the interop tests of mpcompat.

usage: peer.py client VARIANT KEYHEX HOST:PORT|/UNIX/PATH
       peer.py listen VARIANT KEYHEX [/UNIX/PATH]

It authenticates with Python's own Listener or Client, then answers every
message m with sha256(m) + m until it gets b"bye", and sends a large
message of its own: bytes(i % 256 for i in range(BIG)). It prints one
result line: OK, AUTHERR <message> or CONNERR <type>: <message>.
VARIANT changes Python's behaviour to play a misbehaving peer:
  plain                a normal peer
  answer-md5           answer challenges with a raw HMAC-MD5 (downgrade)
  answer-md5-prefixed  answer challenges with {md5} + HMAC-MD5 (downgrade)
  challenge-md5        challenge with {md5} instead of {sha256}
"""
import hashlib
import hmac
import signal
import sys

signal.alarm(20)  # never outlive a broken test

from multiprocessing import connection
from multiprocessing.connection import AuthenticationError, Client, Listener

BIG = 3 * 1024 * 1024 + 5


def main():
    role, variant, key = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
    if variant == 'answer-md5':
        connection._create_response = lambda k, m: hmac.new(k, m, 'md5').digest()
    elif variant == 'answer-md5-prefixed':
        connection._create_response = lambda k, m: b'{md5}' + hmac.new(k, m, 'md5').digest()
    elif variant == 'challenge-md5':
        deliver = connection.deliver_challenge
        connection.deliver_challenge = lambda c, k: deliver(c, k, digest_name='md5')
    elif variant != 'plain':
        sys.exit('unknown variant %r' % variant)
    try:
        if role == 'client' and sys.argv[4].startswith('/'):
            c = Client(sys.argv[4], authkey=key)
        elif role == 'client':
            host, port = sys.argv[4].rsplit(':', 1)
            c = Client((host, int(port)), authkey=key)
        elif len(sys.argv) > 4:
            listener = Listener(sys.argv[4], authkey=key)
            print('ADDR %s' % listener.address, flush=True)
            c = listener.accept()
        else:
            listener = Listener(('127.0.0.1', 0), authkey=key)
            print('ADDR %s:%d' % listener.address, flush=True)
            c = listener.accept()
    except AuthenticationError as e:
        print('AUTHERR %s' % e, flush=True)
        sys.exit(3)
    except (EOFError, OSError) as e:
        print('CONNERR %s: %s' % (type(e).__name__, e), flush=True)
        sys.exit(4)
    while True:
        m = c.recv_bytes()
        if m == b'bye':
            break
        c.send_bytes(hashlib.sha256(m).digest() + m)
    c.send_bytes((bytes(range(256)) * (BIG // 256 + 1))[:BIG])
    c.close()
    print('OK', flush=True)


main()
