//! A fault-injecting TCP proxy on the links between nodes (in the spirit of Toxiproxy).
//!
//! The kernel of the project's machines has no `netem`, so latency, jitter, slow links and
//! connection resets come from here. Every node advertises its alias address (see
//! [`crate::netns`]) as its cluster address and is seeded with the other nodes' aliases, so
//! every cluster connection, whoever dials, lands on the proxy: node `i` dialling node `j`
//! reaches the listener on `j`'s alias, the proxy tells `i` from the source address, and dials
//! `j`'s real address from `i`'s alias. The connection then belongs to link `(i, j)`, and the
//! toxics set for that link apply to both directions of it, read afresh for every chunk, so
//! changing them affects open connections at once.
//!
//! - **latency / jitter**: each chunk is delivered `latency ± jitter` after it was read, never
//!   before the previous chunk (TCP does not reorder);
//! - **slow**: delivery is paced to a byte rate;
//! - **reset**: open connections are reset (RST, via a zero linger) and new ones are reset
//!   after a random short life.
//!
//! The proxy buffers at most 64 chunks of 16 KiB per direction of a connection; beyond that it
//! stops reading, so a stopped node exerts backpressure as it would on a direct link.
//!
//! It runs on a runtime of its own, on its own threads: a link must not slow down because the
//! harness is busy (checking a large history, running a command), or the nodes would see
//! "faults" nobody scheduled.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// A link: (node that dialled, node dialled).
pub type Link = (usize, usize);

/// One node as the proxy sees it.
#[derive(Debug, Clone)]
pub struct ProxyNode {
    /// Where peers dial this node (its alias and cluster port).
    pub listen: SocketAddr,
    /// The node's real cluster listener.
    pub upstream: SocketAddr,
    /// The address this node's own connections come from (its real address).
    pub node_ip: IpAddr,
    /// The address the proxy dials this node's peers from, on its behalf (its alias).
    pub source_ip: IpAddr,
}

/// Faults applied to one link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Toxics {
    /// Added one-way delay.
    pub latency: Duration,
    /// Uniform jitter around the delay (never below zero).
    pub jitter: Duration,
    /// Pace delivery to this many bytes per second, per direction of a connection.
    pub bytes_per_s: Option<u32>,
    /// Reset connections after a random life in this range (and existing ones at once, see
    /// [`Proxy::reset_node`]).
    pub reset_after: Option<(Duration, Duration)>,
}

/// Counters of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections proxied.
    pub connections: u64,
    /// Bytes delivered (both directions).
    pub bytes: u64,
    /// Connections the proxy reset.
    pub resets: u64,
    /// Connections whose upstream could not be reached.
    pub upstream_failures: u64,
}

#[derive(Debug, Default)]
struct Shared {
    nodes: Vec<ProxyNode>,
    toxics: Mutex<HashMap<Link, Toxics>>,
    open: Mutex<HashMap<u64, (Link, Arc<Notify>)>>,
    stats: Mutex<HashMap<Link, LinkStats>>,
    /// Connections from addresses that are no node.
    strangers: AtomicU64,
    next_id: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn toxics(&self, link: Link) -> Toxics {
        lock(&self.toxics).get(&link).copied().unwrap_or_default()
    }

    fn count(&self, link: Link, update: impl FnOnce(&mut LinkStats)) {
        update(lock(&self.stats).entry(link).or_default());
    }
}

/// The running proxy. Dropping it stops its runtime, which closes every listener and
/// connection.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listens for every node (index = position in `nodes`), on a runtime of its own.
    pub fn start(nodes: Vec<ProxyNode>) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            nodes,
            ..Shared::default()
        });
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("chaos-proxy".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("chaos-proxy")
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = bound_tx.send(Err(anyhow::Error::from(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match listen(&serving).await {
                        Ok(listeners) => {
                            let _ = bound_tx.send(Ok(()));
                            let _ = stop.await;
                            drop(listeners);
                        }
                        Err(e) => {
                            let _ = bound_tx.send(Err(e));
                        }
                    }
                });
                // Dropping the runtime here ends every connection task.
            })?;
        bound_rx
            .recv()
            .context("the proxy thread ended before listening")??;
        Ok(Self {
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Sets `toxics` on every link to and from `node`.
    pub fn set_node(&self, node: usize, toxics: Toxics) {
        let n = self.shared.nodes.len();
        let mut all = lock(&self.shared.toxics);
        for other in (0..n).filter(|o| *o != node) {
            all.insert((node, other), toxics);
            all.insert((other, node), toxics);
        }
    }

    /// Removes every toxic.
    pub fn clear(&self) {
        lock(&self.shared.toxics).clear();
    }

    /// Resets every open connection to or from `node`; returns how many.
    pub fn reset_node(&self, node: usize) -> usize {
        let open = lock(&self.shared.open);
        let mut reset = 0;
        for ((from, to), kill) in open.values() {
            if *from == node || *to == node {
                kill.notify_one();
                reset += 1;
            }
        }
        reset
    }

    /// Counters per link.
    pub fn stats(&self) -> HashMap<Link, LinkStats> {
        lock(&self.shared.stats).clone()
    }

    /// Connections refused because they came from no node's address.
    pub fn strangers(&self) -> u64 {
        self.shared.strangers.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for (_, kill) in lock(&self.shared.open).values() {
            kill.notify_one();
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds every node's listener and starts accepting; the tasks end with the runtime.
async fn listen(shared: &Arc<Shared>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut listeners = Vec::new();
    for (dst, node) in shared.nodes.iter().enumerate() {
        let listener = TcpListener::bind(node.listen)
            .await
            .with_context(|| format!("proxy listening on {}", node.listen))?;
        listeners.push(tokio::spawn(accept_loop(listener, dst, shared.clone())));
    }
    Ok(listeners)
}

async fn accept_loop(listener: TcpListener, dst: usize, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, from)) = listener.accept().await else {
            // Accept errors (e.g. out of descriptors) are transient; do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(src) = shared.nodes.iter().position(|n| n.node_ip == from.ip()) else {
            shared.strangers.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        tokio::spawn(proxy_connection(inbound, (src, dst), shared.clone()));
    }
}

async fn connect_upstream(shared: &Shared, (src, dst): Link) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(shared.nodes[src].source_ip, 0))?;
    let upstream = shared.nodes[dst].upstream;
    match tokio::time::timeout(Duration::from_secs(3), socket.connect(upstream)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

async fn proxy_connection(mut inbound: TcpStream, link: Link, shared: Arc<Shared>) {
    let mut outbound = match connect_upstream(&shared, link).await {
        Ok(stream) => stream,
        Err(_) => {
            shared.count(link, |s| s.upstream_failures += 1);
            // Close at once, as a refused direct connection would.
            let _ = inbound.set_zero_linger();
            return;
        }
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    shared.count(link, |s| s.connections += 1);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let kill = Arc::new(Notify::new());
    lock(&shared.open).insert(id, (link, kill.clone()));
    let life = shared.toxics(link).reset_after.map(|(low, high)| {
        let millis = rand::rng().random_range(low.as_millis()..=high.as_millis().max(1));
        Duration::from_millis(millis as u64)
    });

    let reset = {
        let (in_read, in_write) = inbound.split();
        let (out_read, out_write) = outbound.split();
        let both = async {
            tokio::try_join!(
                pump(in_read, out_write, link, &shared),
                pump(out_read, in_write, link, &shared)
            )
        };
        tokio::select! {
            result = both => result.is_err(),
            () = kill.notified() => true,
            () = sleep_or_never(life) => true,
        }
    };
    lock(&shared.open).remove(&id);
    if reset {
        // A zero linger turns the close into a reset, as a broken link looks to both ends.
        let _ = inbound.set_zero_linger();
        let _ = outbound.set_zero_linger();
        shared.count(link, |s| s.resets += 1);
    }
}

async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Copies one direction, applying the link's toxics; ends with a FIN to the far side.
async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    link: Link,
    shared: &Shared,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut last = Instant::now();
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let toxics = shared.toxics(link);
            let at = (Instant::now() + delay(&toxics)).max(last);
            last = at;
            if tx.send((at, buf[..n].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            let count = |n: usize| shared.count(link, |s| s.bytes += n as u64);
            write_paced(&mut to, &chunk, shared.toxics(link).bytes_per_s, count).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

fn delay(toxics: &Toxics) -> Duration {
    if toxics.jitter.is_zero() {
        return toxics.latency;
    }
    let jitter = toxics.jitter.as_secs_f64();
    let offset = rand::rng().random_range(-jitter..=jitter);
    Duration::from_secs_f64((toxics.latency.as_secs_f64() + offset).max(0.0))
}

/// Writes `chunk`, in pieces of a twentieth of a second's worth when `bytes_per_s` is set,
/// calling `written` after each piece.
async fn write_paced(
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    chunk: &[u8],
    bytes_per_s: Option<u32>,
    written: impl Fn(usize),
) -> std::io::Result<()> {
    let Some(rate) = bytes_per_s.filter(|r| *r > 0) else {
        to.write_all(chunk).await?;
        written(chunk.len());
        return Ok(());
    };
    let piece = (rate as usize / 20).max(1);
    for part in chunk.chunks(piece) {
        to.write_all(part).await?;
        written(part.len());
        tokio::time::sleep(Duration::from_secs_f64(part.len() as f64 / f64::from(rate))).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proxy on loopback: one "node" listener behind it, the dialler identified by its
    /// source address (127.0.0.1), the upstream dialled from 127.0.0.2.
    async fn echo_behind_proxy() -> (Proxy, SocketAddr, tokio::task::JoinHandle<Vec<IpAddr>>) {
        let upstream = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let upstream_addr = upstream.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut sources = Vec::new();
            while let Ok(Ok((mut conn, from))) =
                tokio::time::timeout(Duration::from_secs(3), upstream.accept()).await
            {
                sources.push(from.ip());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
            sources
        });
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let listen = probe.local_addr().expect("addr");
        drop(probe);
        let localhost: IpAddr = [127, 0, 0, 1].into();
        let nodes = vec![
            // Node 0: the dialler (connects from 127.0.0.1; dials out from 127.0.0.2).
            ProxyNode {
                listen: SocketAddr::from(([127, 0, 0, 3], listen.port())),
                upstream: SocketAddr::from(([127, 0, 0, 1], 9)),
                node_ip: localhost,
                source_ip: [127, 0, 0, 2].into(),
            },
            // Node 1: the echo server.
            ProxyNode {
                listen,
                upstream: upstream_addr,
                node_ip: [127, 0, 0, 4].into(),
                source_ip: [127, 0, 0, 4].into(),
            },
        ];
        let proxy = Proxy::start(nodes).expect("proxy starts");
        (proxy, listen, server)
    }

    async fn round_trip(stream: &mut TcpStream, bytes: usize) -> Duration {
        let started = Instant::now();
        stream.write_all(&vec![7u8; bytes]).await.expect("write");
        let mut back = vec![0u8; bytes];
        stream.read_exact(&mut back).await.expect("echoed");
        assert!(back.iter().all(|b| *b == 7));
        started.elapsed()
    }

    #[tokio::test]
    async fn forwards_adds_latency_throttles_and_resets() {
        let (proxy, listen, server) = echo_behind_proxy().await;
        let mut stream = TcpStream::connect(listen).await.expect("connect");

        let clean = round_trip(&mut stream, 100).await;
        assert!(clean < Duration::from_millis(100), "{clean:?}");

        // 150 ms each way: at least 300 ms per round trip, on the open connection.
        proxy.set_node(
            1,
            Toxics {
                latency: Duration::from_millis(150),
                ..Toxics::default()
            },
        );
        let slow = round_trip(&mut stream, 100).await;
        assert!(slow >= Duration::from_millis(300), "{slow:?}");

        // 20 kB/s each way, paced in 50 ms pieces: the last of 8 kB leaves after 350 ms.
        proxy.set_node(
            1,
            Toxics {
                bytes_per_s: Some(20_000),
                ..Toxics::default()
            },
        );
        let throttled = round_trip(&mut stream, 8_000).await;
        assert!(throttled >= Duration::from_millis(340), "{throttled:?}");

        proxy.clear();
        assert_eq!(proxy.reset_node(1), 1);
        let mut buf = [0u8; 1];
        let after = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(
            matches!(after, Ok(Err(_)) | Ok(Ok(0))),
            "the connection is closed: {after:?}"
        );
        let stats = proxy.stats()[&(0, 1)];
        assert_eq!((stats.connections, stats.resets), (1, 1));
        assert_eq!(stats.bytes, 2 * 8_200, "{stats:?}");
        drop(proxy);
        // The upstream saw the dialler's alias, not its real address.
        assert_eq!(
            server.await.expect("server"),
            vec![IpAddr::from([127, 0, 0, 2])]
        );
    }

    #[tokio::test]
    async fn connections_die_young_while_resets_are_on() {
        let (proxy, listen, _server) = echo_behind_proxy().await;
        proxy.set_node(
            0,
            Toxics {
                reset_after: Some((Duration::from_millis(50), Duration::from_millis(100))),
                ..Toxics::default()
            },
        );
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(matches!(read, Ok(Err(_)) | Ok(Ok(0))), "{read:?}");
        assert_eq!(proxy.stats()[&(0, 1)].resets, 1);
        assert_eq!(proxy.strangers(), 0);
    }
}
