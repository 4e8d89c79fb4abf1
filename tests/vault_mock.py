"""A stand-in for HashiCorp Vault, following its documented HTTP API for what credproxy uses:
KV v2 reads (GET /v1/<mount>/data/<path>), token lookup-self and renew-self, and the
Kubernetes auth login. No Vault server can be installed here; this follows
https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2 and .../auth/kubernetes.

Usage: vault_mock.py PORT STATE_DIR
STATE_DIR/secrets.json   {"secret/data/app": {"token": "..."}}   (re-read on every request)
STATE_DIR/log            one line per request: METHOD PATH TOKEN NAMESPACE
Tokens: "root-token" never expires; a Kubernetes login with jwt "k8s-jwt" and role "credproxy"
returns "k8s-token-N" with a 3 s lease; renew-self extends k8s tokens unless STATE_DIR/no-renew
exists.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
STATE = sys.argv[2]
logins = {"n": 0}
valid = {"root-token"}


def secrets():
    with open(os.path.join(STATE, "secrets.json")) as f:
        return json.load(f)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def record(self):
        token = self.headers.get("X-Vault-Token", "-")
        ns = self.headers.get("X-Vault-Namespace", "-")
        with open(os.path.join(STATE, "log"), "a") as f:
            f.write(f"{self.command} {self.path} {token} {ns}\n")
        return token

    def body(self):
        n = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self):
        token = self.record()
        if token not in valid:
            return self.reply(403, {"errors": ["permission denied"]})
        if self.path == "/v1/auth/token/lookup-self":
            ttl = 0 if token == "root-token" else 3
            return self.reply(200, {"data": {"ttl": ttl, "renewable": ttl > 0}})
        path = self.path[len("/v1/"):]
        data = secrets().get(path)
        if data is None:
            return self.reply(404, {"errors": []})
        self.reply(200, {"data": {"data": data, "metadata": {"version": 1}}})

    def do_POST(self):
        token = self.record()
        body = self.body()
        if self.path == "/v1/auth/kubernetes/login":
            if body.get("jwt") != "k8s-jwt" or body.get("role") != "credproxy":
                return self.reply(400, {"errors": ["invalid role or service account token"]})
            logins["n"] += 1
            t = f"k8s-token-{logins['n']}"
            valid.add(t)
            return self.reply(200, {"auth": {"client_token": t, "lease_duration": 3, "renewable": True}})
        if self.path == "/v1/auth/token/renew-self":
            if token not in valid or os.path.exists(os.path.join(STATE, "no-renew")):
                valid.discard(token)
                return self.reply(403, {"errors": ["permission denied"]})
            return self.reply(200, {"auth": {"client_token": token, "lease_duration": 3, "renewable": True}})
        self.reply(404, {"errors": []})


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
