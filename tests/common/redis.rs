//! Real Redis servers for the fleet tests: one node, or a Cluster of 3 masters with a replica
//! each, on free loopback ports, stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
    /// TLS on `port` (cert, key, CA files) and a password, when set.
    tls: Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)>,
    password: Option<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::spawn(free_port(), false)
    }

    fn spawn(port: u16, cluster: bool) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RedisServer {
            child: None,
            port,
            dir,
            cluster,
            tls: None,
            password: None,
        };
        s.restart();
        s
    }

    /// TLS only (a certificate for localhost and 127.0.0.1 from a fresh CA, whose PEM is
    /// returned), with a password.
    pub fn start_tls(password: &str) -> (RedisServer, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca_file) = (
            dir.path().join("redis.pem"),
            dir.path().join("redis.key"),
            dir.path().join("ca.pem"),
        );
        // OpenSSL (which redis-server uses) makes the CA and the server's certificate.
        let script = format!(
            "set -e; cd {0}; \
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=credproxy-test-ca 2>/dev/null; \
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout redis.key -out redis.csr -subj /CN=localhost 2>/dev/null; \
             printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext; \
             openssl x509 -req -in redis.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out redis.pem -days 1 -extfile ext 2>/dev/null",
            dir.path().display()
        );
        let ok = Command::new("bash").args(["-c", &script]).status().unwrap();
        assert!(ok.success(), "openssl could not make the test certificates");
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
            cluster: false,
            tls: Some((cert, key, ca_file.clone())),
            password: Some(password.into()),
        };
        s.restart();
        (s, ca_file)
    }

    /// Starts (again) on the same port, with no data: a restart of a server without
    /// persistence.
    pub fn restart(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("nodes.conf"));
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            Some((cert, key, ca)) => {
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .args(["--tls-auth-clients", "no"])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .arg("--tls-ca-cert-file")
                    .arg(ca);
            }
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
        }
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            // A replica may take over however long it was cut off: on a loaded test machine
            // the default data-age rule can leave a dead master's slots unserved.
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-replica-validity-factor", "0"]);
        }
        self.child = Some(cmd.spawn().expect("redis-server is installed (.ci/setup)"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start: {}",
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the server: a replica that stops acknowledging.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success());
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if self.cluster {
            cmd.arg("-c");
        }
        if let Some((_, _, ca)) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        if let Some(p) = &self.password {
            cmd.args(["--no-auth-warning", "-a", p]);
        }
        let out = cmd
            .args(args)
            .output()
            .expect("redis-cli is installed (.ci/setup)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key and its value (strings and hashes), for scans.
    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let keys = self.cli(&["--scan"]);
        let mut out = Vec::new();
        for k in keys.lines().filter(|k| !k.is_empty()) {
            let ty = self.cli(&["TYPE", k]);
            let value = match ty.trim() {
                "hash" => self.raw(&["HGETALL", k]),
                _ => self.raw(&["GET", k]),
            };
            out.push((k.to_string(), value));
        }
        out
    }

    fn raw(&self, args: &[&str]) -> Vec<u8> {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--no-raw"])
            .args(args)
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free port whose cluster bus port (the port + 10000, which a cluster node also listens
/// on) is free too: a free port alone left the bus port to chance (a node failed with
/// "Address already in use" on it).
fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        let bus = port
            .checked_add(10000)
            .map(|b| std::net::TcpListener::bind(("127.0.0.1", b)));
        if matches!(bus, Some(Ok(_))) {
            return port;
        }
    }
    panic!("no free port with a free cluster bus port (+10000) in 1,000 tries");
}

/// Three masters with a replica each.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| RedisServer::spawn(cluster_port(), true))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.nodes[0]
            .cli(&["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
        {
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
        c.wait_replicas_synced(deadline);
        c
    }

    /// Waits until every replica has finished its initial sync: a master killed before that
    /// has no replica able to take over.
    fn wait_replicas_synced(&self, deadline: Instant) {
        for n in &self.nodes {
            loop {
                let info = n.cli(&["INFO", "replication"]);
                let replica = info.contains("role:slave");
                if !replica || info.contains("master_link_status:up") {
                    break;
                }
                assert!(Instant::now() < deadline, "a replica did not sync: {info}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The last lines of every node's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = std::fs::read_to_string(n.dir.path().join("redis.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!("--- node :{} ---\n", n.port));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Whether the cluster, asked through `live`, has marked `dead` as failed (not merely
    /// suspected) and serves every slot again: its replica took over.
    pub fn failed_over(&self, live: usize, dead: usize) -> bool {
        let port = format!(":{}@", self.nodes[dead].port);
        let nodes = self.nodes[live].cli(&["CLUSTER", "NODES"]);
        let marked = nodes.lines().any(|l| {
            l.contains(&port)
                && l.split_whitespace()
                    .nth(2)
                    .is_some_and(|f| f.split(',').any(|x| x == "fail"))
        });
        marked
            && self.nodes[live]
                .cli(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
    }

    /// The seed URLs, as a YAML list.
    pub fn yaml_urls(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// The node that is master of the slot holding `key`.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: u16 = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        let slots = self.nodes[0].cli(&["CLUSTER", "SHARDS"]);
        let _ = slots;
        let nodes = self.nodes[0].cli(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            for range in &f[8..] {
                let (lo, hi) = match range.split_once('-') {
                    Some((a, b)) => (a.parse::<u16>().unwrap_or(1), b.parse::<u16>().unwrap_or(0)),
                    None => (range.parse().unwrap_or(1), range.parse().unwrap_or(0)),
                };
                if (lo..=hi).contains(&slot) {
                    return self.nodes.iter().position(|n| n.port == port).unwrap();
                }
            }
        }
        panic!("no master for slot {slot}:\n{nodes}");
    }

    /// The node replicating master `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let id = self.nodes[master].cli(&["CLUSTER", "MYID"]);
        let id = id.trim();
        self.nodes
            .iter()
            .position(|n| {
                let role = n.cli(&["CLUSTER", "NODES"]);
                role.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[2].contains("myself") && f[2].contains("slave") && f[3] == id
                })
            })
            .expect("every master has a replica")
    }

    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let mut all = Vec::new();
        for n in &self.nodes {
            let role = n.cli(&["ROLE"]);
            if role.starts_with("master") {
                let keys = n.cli(&["--scan"]);
                for k in keys.lines().filter(|k| !k.is_empty()) {
                    let ty = n.cli(&["TYPE", k]);
                    let v = match ty.trim() {
                        "hash" => n.raw(&["HGETALL", k]),
                        _ => n.raw(&["GET", k]),
                    };
                    all.push((k.to_string(), v));
                }
            }
        }
        all
    }
}
