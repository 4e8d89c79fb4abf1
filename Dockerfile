# credproxy: multi-stage build, small non-root runtime image.
#   docker build -t credproxy .
#   docker run -p 8080:8080 -p 9090:9090 -v $PWD/credentials.yaml:/etc/credproxy/credentials.yaml:ro credproxy
# .ci/dockerfile-check replays the build stage outside Docker, so this file cannot rot.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake curl python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# A profile-guided build (pgo/build.sh): instrumented, trained on loopback, then optimised with
# the profile (~1.2x the requests per second of a plain release build, BENCHMARKS.md).
# Dependencies first, instrumented as pgo/build.sh's first step builds them, so source edits
# do not rebuild them there. Every target Cargo.toml declares (the library, the binary, each
# [[bench]]) gets a stub, or cargo refuses the manifest.
COPY Cargo.toml Cargo.lock build.rs ./
COPY vendor ./vendor
COPY providers ./providers
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in $(sed -n '/^\[\[bench\]\]/,/^name/ s/^name = "\(.*\)"/\1/p' Cargo.toml); do \
         echo 'fn main() {}' > "benches/$b.rs"; done \
    && RUSTFLAGS="-Cprofile-generate=$PWD/target/pgo/data" cargo build --release --locked \
         --bin credproxy --target-dir target/pgo/gen \
    && rm -rf src
COPY src ./src
COPY examples ./examples
COPY pgo ./pgo
COPY benches/common.sh ./benches/
RUN touch src/main.rs src/lib.rs && pgo/build.sh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/credproxy --create-home credproxy
COPY --from=build /src/target/release/credproxy /usr/local/bin/credproxy
USER 10001
WORKDIR /var/lib/credproxy
ENV CREDPROXY_CONFIG=/etc/credproxy/credentials.yaml
# In a container the listeners must bind 0.0.0.0: set proxy.listen / proxy.admin in the mounted
# config (and configure `clients:` when anything but the workflow's own pod can reach it).
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=2s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q 200 <&3"]
ENTRYPOINT ["/usr/local/bin/credproxy"]
CMD ["run"]
