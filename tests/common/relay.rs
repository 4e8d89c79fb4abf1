//! A TCP relay on loopback that can be cut: a network partition between one process and a
//! server (a replica and Redis). While cut, its connections are closed and new ones refused
//! at once, so whatever the client sends meanwhile is lost, not delayed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Relay {
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Relays loopback connections to `to`.
    pub fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (cut, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, s) = (cut.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) if !c.load(Ordering::Relaxed) => {
                        // Accepted sockets inherit non-blocking mode on some systems.
                        let _ = client.set_nonblocking(false);
                        relay(client, to, &c)
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Relay { port, cut, stop }
    }

    /// The flag that cuts the relay while set (for a callback to flip).
    pub fn switch(&self) -> Arc<AtomicBool> {
        self.cut.clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Cutting ends the pumps too (they check it every 20 ms).
        self.cut.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, to: u16, cut: &Arc<AtomicBool>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
        return;
    };
    let pairs = [
        (client.try_clone(), server.try_clone()),
        (server.try_clone(), client.try_clone()),
    ];
    for pair in pairs {
        if let (Ok(from), Ok(into)) = pair {
            let cut = cut.clone();
            std::thread::spawn(move || pump(from, into, &cut));
        }
    }
}

/// Copies until either side closes or the relay is cut (checked every 20 ms).
fn pump(mut from: TcpStream, mut into: TcpStream, cut: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 16 * 1024];
    while !cut.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if cut.load(Ordering::Relaxed) || into.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = into.shutdown(Shutdown::Both);
}
