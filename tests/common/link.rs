//! A network link that a test can cut: a TCP relay on a free loopback port in front of
//! a real server (the central broker of a bridge), forwarding bytes both ways.
//!
//! `cut()` closes every connection through it and, until `restore()`, closes each new
//! one as soon as it is accepted, which is what a client sees when the far side of a
//! WAN link is unreachable: the connection drops, reconnection attempts fail. It
//! carries bytes and never looks at them, so the two ends still speak MQTT to each
//! other: this is a fault injector, not a stand-in for either server.
//!
//! Blocking std code with its own threads, usable from sync and async tests.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A relay 127.0.0.1:`port` → 127.0.0.1:`target`, stopped on drop.
pub struct Link {
    pub port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    target: u16,
    cut: AtomicBool,
    stop: AtomicBool,
    /// Connections accepted while the link was up (each a client's connection).
    forwarded: AtomicUsize,
    /// Both sockets of every live forwarded connection, to close them on `cut`.
    open: Mutex<Vec<TcpStream>>,
}

impl Link {
    pub fn start(target: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("link: cannot bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        listener
            .set_nonblocking(true)
            .expect("link: non-blocking listener");
        let shared = Arc::new(Shared {
            target,
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            forwarded: AtomicUsize::new(0),
            open: Mutex::new(Vec::new()),
        });
        let accept = shared.clone();
        thread::spawn(move || accept_loop(listener, accept));
        Link { port, shared }
    }

    /// `HOST:PORT` of the relay, e.g. for a bridge's `address`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// How many connections were forwarded so far (a reconnecting client adds one).
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }
}

impl Shared {
    fn close_all(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if shared.cut.load(Ordering::SeqCst) {
                    // The link is down: the connection dies at once.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if let Err(e) = forward(client, &shared) {
                    eprintln!("link: cannot reach 127.0.0.1:{}: {e}", shared.target);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => {
                eprintln!("link: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn forward(client: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect(("127.0.0.1", shared.target))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    {
        let mut open = shared.open.lock().unwrap();
        open.push(client.try_clone()?);
        open.push(server.try_clone()?);
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    pump(client.try_clone()?, server.try_clone()?);
    pump(server, client);
    Ok(())
}

/// Copies `from` → `to` on its own thread; when either side ends, both are closed.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
