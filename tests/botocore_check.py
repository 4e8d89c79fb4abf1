"""Second signer: recompute with botocore what credproxy signed.

Reads a JSON list of captured requests (as the origin received them) on stdin and checks each
signature with botocore's SigV4Auth / S3SigV4Auth (header mode) or SigV4QueryAuth (query
mode), over exactly the headers credproxy signed. Prints one line per request; exits 1 on any
mismatch.
"""
import json
import sys
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import S3SigV4Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

AK = "AKIDEXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"


def check(c):
    creds = Credentials(AK, SK)
    url = c["url"]
    headers = dict(c["headers"])
    if c["mode"] == "query":
        parts = urlsplit(url)
        q = dict(parse_qsl(parts.query, keep_blank_values=True))
        want = q["X-Amz-Signature"]
        signed = q["X-Amz-SignedHeaders"].split(";")
        auth = SigV4QueryAuth(creds, c["service"], REGION, expires=int(q["X-Amz-Expires"]))
        timestamp = q["X-Amz-Date"]
        # botocore builds the query from the request's params: hand it the unsigned URL.
        base = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "X-Amz-Signature"]
        url = parts._replace(query="").geturl()
        req = AWSRequest(method=c["method"], url=url, data=bytes.fromhex(c["body_hex"]), params=dict(base))
    else:
        authz = headers["authorization"]
        want = authz.split("Signature=")[1]
        signed = authz.split("SignedHeaders=")[1].split(",")[0].split(";")
        cls = S3SigV4Auth if c["service"] == "s3" else SigV4Auth
        auth = cls(creds, c["service"], REGION)
        timestamp = headers["x-amz-date"]
        req = AWSRequest(method=c["method"], url=url, data=bytes.fromhex(c["body_hex"]))
    for name in signed:
        req.headers[name] = headers[name]
    req.context["timestamp"] = timestamp
    # Sign over exactly the headers credproxy chose.
    def only_signed(r, names=signed):
        h = HTTPHeaders()
        for n in names:
            h[n] = r.headers[n]
        return h

    auth.headers_to_sign = only_signed
    if c["mode"] == "query":
        req.prepare()
    cr = auth.canonical_request(req)
    got = auth.signature(auth.string_to_sign(req, cr), req)
    ok = got == want
    print(("OK  " if ok else "BAD ") + c["method"] + " " + c["service"] + " " + c["mode"] + " " + c["url"])
    if not ok:
        print("canonical request (botocore):\n" + cr)
    return ok


cases = json.load(sys.stdin)
results = [check(c) for c in cases]
sys.exit(0 if all(results) else 1)
