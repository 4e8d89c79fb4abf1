# Shell helpers shared by the scripts in benches/ (sourced from the repository root, not run).

# A free loopback port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Wait until something listens on loopback port $1.
wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done
  echo "port $1 never opened" >&2; exit 1
}

# self_signed CERT KEY: a P-256 certificate for 127.0.0.1 and its key, PEM (as credproxy's
# leaves are), for bare pingora and nginx terminating TLS.
self_signed() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout "$2" -out "$1" 2>/dev/null
}

# nginx_conf DIR LISTEN_PORT ORIGIN_PORT WORKERS [TLS_PORT TLS_ORIGIN_PORT CERT KEY]: an nginx
# reverse proxy to the origin that adds the bearer header (the peer credproxy is measured
# against), written to DIR/nginx.conf; its pid file is DIR/nginx.pid. With the four more
# arguments it also terminates TLS on TLS_PORT and speaks TLS to the HTTPS origin (kept
# connections, sessions reused): the peer of an intercepted request.
nginx_conf() {
  local dir=$1 tls=""
  mkdir -p "$dir"
  if [ $# -ge 8 ]; then
    tls="upstream origin_tls { server 127.0.0.1:$6; keepalive 256; }
  server {
    listen 127.0.0.1:$5 ssl;
    ssl_certificate $7; ssl_certificate_key $8;
    location / {
      proxy_pass https://origin_tls;
      proxy_ssl_verify off; proxy_ssl_session_reuse on;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Authorization \"Bearer bench\";
    }
  }"
  fi
  cat > "$dir/nginx.conf" <<NGINX
worker_processes $4;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
  uwsgi_temp_path $dir; scgi_temp_path $dir;
  upstream origin { server 127.0.0.1:$3; keepalive 256; }
  server {
    listen 127.0.0.1:$2;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer bench";
    }
  }
  $tls
}
NGINX
}

# cpu_ticks PID...: the processes' utime + stime together, in clock ticks (getconf CLK_TCK).
cpu_ticks() {
  local s=0 p f
  for p in "$@"; do read -r -a f < "/proc/$p/stat"; s=$((s + f[13] + f[14])); done
  echo $s
}

# nginx_stop DIR: kills the nginx that nginx_conf configured in DIR, workers included (a worker
# killed before its master is respawned by it; a master killed alone leaves its workers).
nginx_stop() {
  local m w
  [ -f "$1/nginx.pid" ] || return 0
  m=$(cat "$1/nginx.pid"); w=$(pgrep -P "$m" || true)
  kill -KILL "$m" $w 2>/dev/null || true
}

# bench_proxy CREDPROXY DIR PORT ADMIN_PORT: makes a CA in DIR/ca (`ca init`) and prints the
# `proxy:` section the bench configs share: listen, admin, loopback egress, that CA, and the
# bench HTTPS origin's CA (DIR/origin-ca.pem) upstream; a caller adds its own keys below it.
bench_proxy() {
  "$1" ca init --dir "$2/ca" >/dev/null
  cat <<YAML
proxy:
  listen: 127.0.0.1:$3
  admin: 127.0.0.1:$4
  egress: { allow: [127.0.0.0/8] }
  ca: { cert: $2/ca/ca.pem, key: $2/ca/ca.key }
  upstream_ca: $2/origin-ca.pem
YAML
}

# The secrets bench_credentials' YAML names, for the credproxy the caller starts.
bench_secrets() {
  export BENCH_TOKEN=bench-static-token-0001 BENCH_SECRET=bench-client-secret-0001
  export BENCH_AWS_KEY=AKIDEXAMPLE BENCH_AWS_SECRET=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
}

# The bench's credentials and routes to origins O OO OS and the HTTPS origin T (arguments in
# that order): a static bearer to O and T, an OAuth token from OO's /token for OO, SigV4 for
# OS. YAML for the end of a credproxy config (secrets from bench_secrets); a caller may list
# more routes after it.
bench_credentials() {
  cat <<YAML
credentials:
  bearer: { type: bearer, token: "\${BENCH_TOKEN}" }
  oauth:
    type: oauth2_client_credentials
    token_url: http://127.0.0.1:$2/token
    client_id: bench
    client_secret: "\${BENCH_SECRET}"
  aws:
    type: aws_sigv4
    access_key_id: "\${BENCH_AWS_KEY}"
    secret_access_key: "\${BENCH_AWS_SECRET}"
    service: s3
    region: us-east-1
routes:
  - { host: "127.0.0.1:$1", credential: bearer }
  - { host: "127.0.0.1:$2", credential: oauth }
  - { host: "127.0.0.1:$3", credential: aws }
  - { host: "127.0.0.1:$4", credential: bearer }
YAML
}
