//! `TCP_NODELAY` on the broker connections rskafka opens.
//!
//! rskafka (0.6) writes each request as two writes, its 4-byte length and then its body, on a
//! socket without `TCP_NODELAY`. Nagle's algorithm then holds the body until the broker has
//! acknowledged the length, and the broker delays that acknowledgement (up to 40 ms on Linux):
//! a small request, as every produce and fetch of a checkout's events is, waits for it.
//! rskafka offers no hook on its sockets, so this process sets the option on its own: every
//! connected TCP socket it holds whose peer is a broker. The sweep runs when a connection may
//! have been made (the client built, a partition client made) and every second, for the
//! connections rskafka remakes on its own after an error.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

/// The addresses the brokers' host names resolve to now.
pub async fn resolve(brokers: &[String]) -> HashSet<SocketAddr> {
    let mut addresses = HashSet::new();
    for broker in brokers {
        if let Ok(found) = tokio::net::lookup_host(broker.as_str()).await {
            addresses.extend(found);
        }
    }
    addresses
}

/// Sets `TCP_NODELAY` on each of this process's TCP sockets connected to one of `peers`;
/// returns how many it set.
pub fn set_nodelay_to(peers: &HashSet<SocketAddr>) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut set = 0;
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is only borrowed for two system calls and never closed here.
        // Another thread may close it meanwhile and the number be reused: the calls then act
        // on that socket (a peer address that is no broker's leaves it alone) or fail with
        // EBADF, which is ignored. Neither touches memory.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let to_broker = socket
            .peer_addr()
            .ok()
            .and_then(|peer| peer.as_socket())
            .is_some_and(|peer| peers.contains(&peer));
        if to_broker
            && socket.tcp_nodelay().is_ok_and(|on| !on)
            && socket.set_tcp_nodelay(true).is_ok()
        {
            set += 1;
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn sets_nodelay_on_sockets_to_the_peers_only() {
        let broker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to_broker = std::net::TcpStream::connect(broker.local_addr().unwrap()).unwrap();
        let to_other = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let peers = HashSet::from([broker.local_addr().unwrap()]);
        assert!(super::set_nodelay_to(&peers) >= 1);
        assert!(to_broker.nodelay().unwrap());
        assert!(!to_other.nodelay().unwrap());
        assert_eq!(super::set_nodelay_to(&peers), 0, "already set");
    }
}
