"""A real gRPC client and server (grpcio) through credproxy's interception (HTTPS_PROXY).

Usage: grpc_check.py PROXY_URL CREDPROXY_CA ORIGIN_CERT ORIGIN_KEY [CALLS]

The server requires the injected credential (authorization: Bearer $GRPC_TOKEN) on every call.
Checked: unary with trailers, server streaming, bidi streaming, an error status with its
message and trailers, and a call sent directly (no proxy) is refused for lack of the
credential. Then CALLS unary calls (default 200) are timed directly (the client sending the
header itself) and through credproxy, printed as "rate direct=N/s intercepted=M/s".
"""
import os
import sys
import time
from concurrent import futures

import grpc

proxy, ca, cert, key = sys.argv[1:5]
calls = int(sys.argv[5]) if len(sys.argv) > 5 else 200
expected = "Bearer " + os.environ["GRPC_TOKEN"]


def authorized(ctx):
    if dict(ctx.invocation_metadata()).get("authorization") != expected:
        ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "the credential was not injected")


def unary(req, ctx):
    authorized(ctx)
    if req == b"fail":
        ctx.set_trailing_metadata((("x-reason", "asked"),))
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "asked to fail")
    ctx.set_trailing_metadata((("x-trailer", "t1"),))
    return req


def server_stream(req, ctx):
    authorized(ctx)
    for i in range(5):
        yield req + str(i).encode()


def bidi(requests, ctx):
    authorized(ctx)
    for m in requests:
        yield m.upper()


handlers = grpc.method_handlers_generic_handler("test.Echo", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Stream": grpc.unary_stream_rpc_method_handler(server_stream),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handlers,))
with open(cert, "rb") as c, open(key, "rb") as k:
    creds = grpc.ssl_server_credentials([(k.read(), c.read())])
port = server.add_secure_port("localhost:0", creds)
server.start()
target = f"localhost:{port}"


def channel(root, via_proxy):
    with open(root, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    opts = [("grpc.enable_http_proxy", 1 if via_proxy else 0)]
    if via_proxy:
        opts.append(("grpc.http_proxy", proxy))
    return grpc.secure_channel(target, creds, options=opts)


via = channel(ca, True)
u = via.unary_unary("/test.Echo/Unary")
s = via.unary_stream("/test.Echo/Stream")
b = via.stream_stream("/test.Echo/Bidi")

reply, call = u.with_call(b"hello", timeout=10)
assert reply == b"hello", reply
assert ("x-trailer", "t1") in call.trailing_metadata(), call.trailing_metadata()
assert list(s(b"s", timeout=10)) == [b"s0", b"s1", b"s2", b"s3", b"s4"]
assert list(b(iter([b"a", b"b", b"c"]), timeout=10)) == [b"A", b"B", b"C"]
try:
    u(b"fail", timeout=10)
    raise AssertionError("the error status was lost")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    assert e.details() == "asked to fail", e.details()
    assert ("x-reason", "asked") in e.trailing_metadata(), e.trailing_metadata()

direct = channel(cert, False)
d = direct.unary_unary("/test.Echo/Unary")
try:
    d(b"x", timeout=10)
    raise AssertionError("the server accepted a call without the credential")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e


def rate(fn):
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return calls / (time.perf_counter() - start)


meta = (("authorization", expected),)
rd = rate(lambda i: d(b"x", timeout=10, metadata=meta))
ri = rate(lambda i: u(b"x", timeout=10))
server.stop(None)
print(f"ok\nrate direct={rd:.0f}/s intercepted={ri:.0f}/s")
