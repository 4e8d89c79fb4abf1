# credproxy: multi-stage build, small non-root runtime image.
#   docker build -t credproxy .
#   docker run -p 8080:8080 -p 9090:9090 -v $PWD/credentials.yaml:/etc/credproxy/credentials.yaml:ro credproxy
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches examples && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/route_match.rs && echo 'fn main() {}' > examples/origin.rs \
    && cargo build --release --locked --bin credproxy && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin credproxy

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
