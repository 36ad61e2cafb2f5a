//! The gateway's listening socket.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Binds `addr` with room for `backlog` connections waiting to be accepted
/// (`[server] listen_backlog`; the kernel caps it at `net.core.somaxconn`).
///
/// `TcpListener::bind` asks for 128. A burst of new clients beyond that (a
/// deploy, a client whose pool is cold, a fixed-rate load) has its SYNs
/// dropped, and each dropped one is retried by the client's kernel after a
/// second: a tail of one-second answers from a gateway that was never busy.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let listener = llm_tower_gateway::listen("127.0.0.1:0".parse().unwrap(), 1024)?;
/// let addr = listener.local_addr()?;
/// let client = tokio::net::TcpStream::connect(addr).await?;
/// let (_accepted, peer) = listener.accept().await?;
/// assert_eq!(peer, client.local_addr()?);
/// # Ok(()) }
/// ```
pub fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As std's bind does on Unix: a restarted gateway can bind while the old
    // one's connections are in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Connections beyond std's 128 are queued for the gateway without being
    /// accepted: each handshake completes in the kernel. With a backlog of
    /// 128 the 130th connect would wait for a SYN retry that never succeeds
    /// while nothing accepts (the guard below is for that hang, not a timing).
    #[tokio::test]
    async fn a_burst_beyond_std_backlog_connects_without_accept() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), 1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let burst = async {
            let mut held = Vec::new();
            for _ in 0..300 {
                held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            }
            held
        };
        let held =
            tokio::time::timeout(Duration::from_secs(30), burst).await.expect("every connect completed");
        assert_eq!(held.len(), 300);
        let (_first, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, held[0].local_addr().unwrap());
    }
}
