"""boto3 as a workflow would run it: no real keys (unsigned), HTTP_PROXY pointing at credproxy.

    HTTP_PROXY=http://127.0.0.1:PROXY python3 tests/boto3_client.py http://s3.test:PORT [uploads]
Prints OK, or the error code the service returned.

With `uploads`: boto3's large uploads instead (for moto's S3): upload_file of 20 MiB in 8 MiB
parts (multipart: create, 3 upload_part, complete), and put_object with a streaming (file
object) body; both read back and compared.
"""
import hashlib
import os
import sys
import tempfile

import boto3
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

s3 = boto3.client(
    "s3",
    endpoint_url=sys.argv[1],
    region_name="us-east-1",
    config=Config(
        signature_version=UNSIGNED,
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 1},
    ),
)


def uploads():
    s3.create_bucket(Bucket="uploads")

    data = os.urandom(20 << 20)
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        parts = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=2)
        s3.upload_file(f.name, "uploads", "multi.bin", Config=parts)
        got = s3.get_object(Bucket="uploads", Key="multi.bin")["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), "multipart round trip"

        small = data[: 6 << 20]
        with tempfile.NamedTemporaryFile() as g:
            g.write(small)
            g.flush()
            with open(g.name, "rb") as stream:
                s3.put_object(Bucket="uploads", Key="stream.bin", Body=stream)
        got = s3.get_object(Bucket="uploads", Key="stream.bin")["Body"].read()
        assert got == small, "streaming put_object round trip"


try:
    if sys.argv[2:] == ["uploads"]:
        uploads()
        print("OK")
        sys.exit(0)
    body = bytes(range(256)) * 4096  # 1 MiB
    s3.put_object(Bucket="logs", Key="run/1.bin", Body=body)
    got = s3.get_object(Bucket="logs", Key="run/1.bin")["Body"].read()
    assert got == body, "round trip"
    print("OK")
except ClientError as e:
    print(e.response["Error"]["Code"])
