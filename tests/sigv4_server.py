"""A tiny S3 stand-in that validates SigV4 the way AWS does (signature recomputed with
botocore over the request as received, with the server's copy of the secret) and stores
objects in memory. A bad signature gets S3's 403 SignatureDoesNotMatch XML.

aws-chunked uploads (x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD) have every
chunk signature checked too, chained from the request's own (computed here with hmac, apart
from botocore and from credproxy), and are stored decoded.

    python3 tests/sigv4_server.py PORT
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

AK = "AKIDEXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
OBJECTS = {}


def valid(method, url, headers, body):
    authz = headers.get("authorization", "")
    if not authz.startswith("AWS4-HMAC-SHA256 Credential=" + AK + "/"):
        return False
    want = authz.split("Signature=")[1]
    signed = authz.split("SignedHeaders=")[1].split(",")[0].split(";")
    region = authz.split("Credential=")[1].split("/")[2]
    req = AWSRequest(method=method, url=url, data=body)
    for n in signed:
        req.headers[n] = headers[n]
    req.context["timestamp"] = headers["x-amz-date"]
    auth = S3SigV4Auth(Credentials(AK, SK), "s3", region)

    def only_signed(r, names=signed):
        h = HTTPHeaders()
        for n in names:
            h[n] = r.headers[n]
        return h

    auth.headers_to_sign = only_signed
    sha = headers.get("x-amz-content-sha256")
    if sha not in (None, "UNSIGNED-PAYLOAD", STREAMING):
        import hashlib
        if hashlib.sha256(body).hexdigest() != sha:
            return False
    cr = auth.canonical_request(req)
    return auth.signature(auth.string_to_sign(req, cr), req) == want


STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


def decode_chunks(headers, body):
    """The payload of an aws-chunked body whose chunk signatures all verify, else None."""
    import hashlib
    import hmac

    def mac(key, msg):
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    authz = headers["authorization"]
    previous = authz.split("Signature=")[1]
    day, region, service = authz.split("Credential=")[1].split(",")[0].split("/")[1:4]
    key = mac(mac(mac(mac(("AWS4" + SK).encode(), day), region), service), "aws4_request")
    scope = f"{day}/{region}/{service}/aws4_request"
    empty = hashlib.sha256(b"").hexdigest()
    out, pos = [], 0
    while True:
        eol = body.index(b"\r\n", pos)
        size_hex, sig = body[pos:eol].decode().split(";chunk-signature=")
        size = int(size_hex, 16)
        data = body[eol + 2:eol + 2 + size]
        if body[eol + 2 + size:eol + 4 + size] != b"\r\n":
            return None
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", headers["x-amz-date"], scope, previous,
                         empty, hashlib.sha256(data).hexdigest()])
        previous = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        if sig != previous:
            return None
        out.append(data)
        pos = eol + 4 + size
        if size == 0:
            break
    if pos != len(body):
        return None
    payload = b"".join(out)
    if len(payload) != int(headers.get("x-amz-decoded-content-length", -1)):
        return None
    return payload


class S3(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        url = "http://" + headers["host"] + self.path
        if not valid(self.command, url, headers, body):
            out = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message></Error>'
            return self.reply(403, out, "application/xml")
        key = self.path.split("?")[0]
        if headers.get("x-amz-content-sha256") == STREAMING:
            try:
                body = decode_chunks(headers, body)
            except ValueError:  # not aws-chunked at all
                body = None
            if body is None:
                out = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>A chunk signature does not match.</Message></Error>'
                return self.reply(403, out, "application/xml")
        if self.command == "PUT":
            OBJECTS[key] = body
            return self.reply(200, b"", "application/xml", {"ETag": '"etag"'})
        if self.command == "GET" and key in OBJECTS:
            return self.reply(200, OBJECTS[key], "application/octet-stream")
        return self.reply(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")

    def reply(self, status, body, ctype, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

    def log_message(self, *a):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), S3)
    print("ready", flush=True)
    server.serve_forever()
