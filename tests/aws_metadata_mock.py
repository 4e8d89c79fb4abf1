"""A stand-in for the AWS credential endpoints that cannot run here: EC2 instance metadata
(IMDSv2: a PUT for a session token, then GETs that must carry it) and the ECS container
credentials endpoint (with its Authorization token). Follows the documented responses.

Usage: aws_metadata_mock.py PORT LOG
Both answer credentials for access key "ASIAMOCK" (moto accepts any key).
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
LOG = sys.argv[2]
SESSION = "imds-session-token"
CREDS = {
    "Code": "Success",
    "AccessKeyId": "ASIAMOCK",
    "SecretAccessKey": "mock-secret-access-key",
    "Token": "mock-session-token",
    "Expiration": "2099-01-01T00:00:00Z",
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def record(self):
        with open(LOG, "a") as f:
            f.write(f"{self.command} {self.path}\n")

    def do_PUT(self):
        self.record()
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(200, SESSION, "text/plain")
        self.reply(400, "bad request", "text/plain")

    def do_GET(self):
        self.record()
        if self.path.startswith("/latest/"):
            if self.headers.get("X-aws-ec2-metadata-token") != SESSION:
                return self.reply(401, "", "text/plain")
            if self.path == "/latest/meta-data/iam/security-credentials/":
                return self.reply(200, "credproxy-role", "text/plain")
            if self.path == "/latest/meta-data/iam/security-credentials/credproxy-role":
                return self.reply(200, json.dumps(CREDS))
        if self.path == "/ecs/creds":
            if self.headers.get("Authorization") != "ecs-auth-token":
                return self.reply(403, "{}")
            return self.reply(200, json.dumps(CREDS))
        self.reply(404, "", "text/plain")


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
