"""A real WebSocket client (python websockets) through credproxy to a websockets server.

Usage: websocket_check.py ws|wss PROXY_URL CREDPROXY_CA ORIGIN_CERT ORIGIN_KEY

The server checks that the upgrade request carried the injected credential (Bearer $WS_TOKEN),
then echoes; the client exchanges text, a 256 KiB binary message and 200 round trips, and the
server pushes a message unasked. Prints "ok" or exits non-zero with what went wrong.
"""
import os
import ssl
import sys
import threading

from websockets.sync.client import connect
from websockets.sync.server import serve

mode, proxy = sys.argv[1], sys.argv[2]
expected = "Bearer " + os.environ["WS_TOKEN"]


def handler(ws):
    auth = ws.request.headers.get("Authorization")
    ws.send("auth-ok" if auth == expected else "auth-wrong")
    for msg in ws:
        if msg == "push":
            ws.send("pushed by the server")
        ws.send(msg)


server_ssl = client_ssl = None
if mode == "wss":
    ca, cert, key = sys.argv[3:6]
    server_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ssl.load_cert_chain(cert, key)
    client_ssl = ssl.create_default_context(cafile=ca)

server = serve(handler, "127.0.0.1", 0, ssl=server_ssl)
port = server.socket.getsockname()[1]
threading.Thread(target=server.serve_forever, daemon=True).start()

uri = f"{mode}://localhost:{port}/socket"
with connect(uri, proxy=proxy, ssl=client_ssl, open_timeout=10, max_size=None) as ws:
    first = ws.recv(timeout=10)
    assert first == "auth-ok", f"the upgrade request did not carry the credential: {first}"
    ws.send("hello")
    assert ws.recv(timeout=10) == "hello"
    blob = os.urandom(256 * 1024)
    ws.send(blob)
    assert ws.recv(timeout=10) == blob, "binary message changed on the way"
    for i in range(200):
        ws.send(f"m{i}")
        assert ws.recv(timeout=10) == f"m{i}"
    ws.send("push")
    assert ws.recv(timeout=10) == "pushed by the server"
    assert ws.recv(timeout=10) == "push"
server.shutdown()
print("ok")
