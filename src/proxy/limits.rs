//! What one client can make the proxy hold: connections per client address, and the time and
//! size of a connection's first request head (a slowloris client trickling a head is cut off
//! at `proxy.timeouts.header`).

use std::net::IpAddr;

use dashmap::DashMap;
use pingora::protocols::l4::stream::Stream as L4;
use prometheus::IntGauge;
use tokio::io::AsyncReadExt;

/// Open connections by client address.
pub struct ClientConnections {
    open: DashMap<IpAddr, usize>,
    /// `credproxy_client_connections`: all addresses together.
    total: IntGauge,
}

/// One counted connection; uncounted when dropped.
pub struct Counted<'a> {
    conns: &'a ClientConnections,
    ip: IpAddr,
}

impl ClientConnections {
    pub fn new(total: IntGauge) -> Self {
        ClientConnections {
            open: DashMap::new(),
            total,
        }
    }

    /// Counts a new connection from `ip`, or `None` when it already has `max` open.
    pub fn acquire(&self, ip: IpAddr, max: usize) -> Option<Counted<'_>> {
        let mut n = self.open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        self.total.inc();
        Some(Counted { conns: self, ip })
    }

    pub fn open(&self, ip: IpAddr) -> usize {
        self.open.get(&ip).map(|n| *n).unwrap_or(0)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.conns.total.dec();
        if let Some(mut n) = self.conns.open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
        }
        self.conns.open.remove_if(&self.ip, |_, n| *n == 0);
    }
}

/// How the first request head arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstHead {
    /// Complete; these are all the bytes read (to be put back for the parser).
    Ready(Vec<u8>),
    /// The client closed (or reset) before a complete head.
    Closed,
    /// The deadline passed; `partial` when some bytes had arrived.
    TimedOut {
        partial: bool,
    },
    TooLarge,
    /// A TLS ClientHello: the client speaks HTTPS to a plain-HTTP proxy port.
    Tls,
}

/// Reads until the end of the first request head, within `deadline` and `max` bytes.
pub async fn read_first_head(l4: &mut L4, deadline: std::time::Duration, max: usize) -> FirstHead {
    let until = tokio::time::Instant::now() + deadline;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(until, l4.read(&mut chunk)).await {
            Err(_) => {
                return FirstHead::TimedOut {
                    partial: !buf.is_empty(),
                }
            }
            Ok(Err(_)) | Ok(Ok(0)) => return FirstHead::Closed,
            Ok(Ok(n)) => n,
        };
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[0] == 0x16 {
            return FirstHead::Tls;
        }
        if buf[scan_from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return FirstHead::Ready(buf);
        }
        if buf.len() >= max {
            return FirstHead::TooLarge;
        }
    }
}

/// Bytes of request bodies held in memory (read whole for signing or for the 401 replay), in
/// all and per client address, so that many clients each holding just under `max_body`
/// cannot exhaust memory (`proxy.limits.max_buffered`, `max_buffered_per_client`).
pub struct BufferBudget {
    state: std::sync::Mutex<Held>,
    /// `credproxy_buffered_bytes`.
    gauge: IntGauge,
}

#[derive(Default)]
struct Held {
    total: u64,
    by_client: std::collections::HashMap<IpAddr, u64>,
}

/// Bytes reserved for one body; given back when dropped.
pub struct Reserved {
    budget: std::sync::Arc<BufferBudget>,
    client: IpAddr,
    bytes: u64,
}

/// The budget is spent: which one, with its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverBudget {
    Total(u64),
    Client(u64),
}

impl BufferBudget {
    pub fn new(gauge: IntGauge) -> Self {
        BufferBudget {
            state: std::sync::Mutex::default(),
            gauge,
        }
    }

    /// Reserves `bytes` for `client`, or says which bound it would cross.
    pub fn reserve(
        self: &std::sync::Arc<Self>,
        client: IpAddr,
        bytes: u64,
        max_total: u64,
        max_client: u64,
    ) -> Result<Reserved, OverBudget> {
        let mut held = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = held.by_client.get(&client).copied().unwrap_or(0);
        if mine + bytes > max_client {
            return Err(OverBudget::Client(max_client));
        }
        if held.total + bytes > max_total {
            return Err(OverBudget::Total(max_total));
        }
        held.total += bytes;
        *held.by_client.entry(client).or_insert(0) += bytes;
        self.gauge
            .set(i64::try_from(held.total).unwrap_or(i64::MAX));
        Ok(Reserved {
            budget: self.clone(),
            client,
            bytes,
        })
    }

    /// Bytes held now, in all.
    pub fn held(&self) -> u64 {
        self.state.lock().map(|h| h.total).unwrap_or(0)
    }
}

impl Reserved {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Takes `more` (reserved for the same client) into this one reservation.
    pub fn absorb(&mut self, mut more: Reserved) {
        self.bytes += more.bytes;
        more.bytes = 0;
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut held = self
            .budget
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.total = held.total.saturating_sub(self.bytes);
        self.budget
            .gauge
            .set(i64::try_from(held.total).unwrap_or(i64::MAX));
        if let Some(n) = held.by_client.get_mut(&self.client) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                held.by_client.remove(&self.client);
            }
        }
    }
}

/// Header fields over the limits, for every request (also inside tunnels and over HTTP/2).
pub fn check_headers(
    headers: &http::HeaderMap,
    max_headers: usize,
    max_bytes: usize,
) -> Result<(), String> {
    if headers.len() > max_headers {
        return Err(format!(
            "{} header fields, more than proxy.limits.max_headers ({max_headers})",
            headers.len()
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if bytes > max_bytes {
        return Err(format!(
            "{bytes} bytes of header fields, more than proxy.limits.max_header_bytes ({max_bytes})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_budget_bounds_all_and_each_client() {
        let b = std::sync::Arc::new(BufferBudget::new(IntGauge::new("b", "b").unwrap()));
        let (x, y): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let a = b.reserve(x, 600, 1000, 700).unwrap();
        assert_eq!(
            b.reserve(x, 200, 1000, 700).err(),
            Some(OverBudget::Client(700))
        );
        let c = b.reserve(y, 300, 1000, 700).unwrap();
        assert_eq!(
            b.reserve(y, 200, 1000, 700).err(),
            Some(OverBudget::Total(1000))
        );
        drop(a);
        assert_eq!(b.held(), 300);
        let _d = b.reserve(x, 700, 1000, 700).unwrap();
        drop(c);
        assert_eq!(b.held(), 700);
    }

    #[test]
    fn connections_are_counted_per_address() {
        let total = IntGauge::new("total", "total").unwrap();
        let c = ClientConnections::new(total.clone());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let g1 = c.acquire(a, 2).unwrap();
        let g2 = c.acquire(a, 2).unwrap();
        assert!(c.acquire(a, 2).is_none());
        let _other = c.acquire(b, 2).unwrap();
        drop(g1);
        assert_eq!(c.open(a), 1);
        let _g3 = c.acquire(a, 2).unwrap();
        drop(g2);
        drop(_g3);
        assert_eq!(c.open(a), 0);
        assert!(c.open.get(&a).is_none(), "no entry left behind");
        assert_eq!(total.get(), 1, "b's connection is still open");
    }

    #[test]
    fn header_limits() {
        let mut h = http::HeaderMap::new();
        for i in 0..5 {
            h.insert(
                http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                http::HeaderValue::from_static("v"),
            );
        }
        assert!(check_headers(&h, 5, 1000).is_ok());
        assert!(check_headers(&h, 4, 1000)
            .unwrap_err()
            .contains("max_headers"));
        assert!(check_headers(&h, 5, 20)
            .unwrap_err()
            .contains("max_header_bytes"));
    }
}
