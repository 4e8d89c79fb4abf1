//! Whether a listener address can be bound, checked before pingora starts: pingora retries a
//! busy address for half a minute and then leaves the process running without listeners.
//! When the address is taken, the holder is named from `/proc` (Linux) where it is visible.

use std::net::{IpAddr, SocketAddr};

/// Binds `addr` once and lets it go; the error names the config key and the holder.
pub fn check_free(addr: SocketAddr, key: &str) -> Result<(), String> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let holder = holder(addr)
                .map(|(pid, name)| format!(", held by {name} (pid {pid})"))
                .unwrap_or_default();
            Err(format!(
                "cannot listen on {addr} ({key}): address already in use{holder}; stop it or choose another address"
            ))
        }
        Err(e) => Err(format!("cannot listen on {addr} ({key}): {e}")),
    }
}

/// The process listening on `addr`, if `/proc` shows it.
fn holder(addr: SocketAddr) -> Option<(u32, String)> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|table| listening_inode(&table, addr))?;
    let wanted = format!("socket:[{inode}]");
    for proc in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(&wanted)));
        if holds {
            let name = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
            return Some((pid, name.trim().to_string()));
        }
    }
    None
}

/// The inode of a socket listening on `addr` (or on the unspecified address and its port)
/// in a `/proc/net/tcp{,6}` table.
fn listening_inode(table: &str, addr: SocketAddr) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
        let (ip, port) = local.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let ip = proc_ip(ip)?;
        let ours = port == addr.port()
            && (ip == addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified());
        (*state == "0A" && ours).then(|| inode.to_string())
    })
}

/// An address as `/proc/net/tcp*` prints it: 32-bit words in host (little-endian) order.
fn proc_ip(hex: &str) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_address_names_its_holder() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let e = check_free(addr, "proxy.listen").unwrap_err();
        assert!(
            e.contains(&format!(
                "cannot listen on {addr} (proxy.listen): address already in use"
            )),
            "{e}"
        );
        if cfg!(target_os = "linux") {
            assert!(e.contains(&format!("(pid {})", std::process::id())), "{e}");
        }
        drop(l);
        assert!(check_free(addr, "proxy.listen").is_ok());
    }

    #[test]
    fn proc_addresses() {
        assert_eq!(proc_ip("0100007F"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            proc_ip("00000000000000000000000001000000"),
            Some("::1".parse().unwrap())
        );
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n";
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(listening_inode(table, a).as_deref(), Some("4242"));
        let b: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        assert_eq!(listening_inode(table, b), None);
    }
}
