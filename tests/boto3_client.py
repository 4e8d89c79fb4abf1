"""boto3 as a workflow would run it: no real keys (unsigned), HTTP_PROXY pointing at credproxy.

    HTTP_PROXY=http://127.0.0.1:PROXY python3 tests/boto3_client.py http://s3.test:PORT
Prints OK, or the error code the service returned.
"""
import sys

import boto3
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
try:
    body = bytes(range(256)) * 4096  # 1 MiB
    s3.put_object(Bucket="logs", Key="run/1.bin", Body=body)
    got = s3.get_object(Bucket="logs", Key="run/1.bin")["Body"].read()
    assert got == body, "round trip"
    print("OK")
except ClientError as e:
    print(e.response["Error"]["Code"])
