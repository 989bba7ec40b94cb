//! Lifeboat's PostgreSQL connections disable Nagle's algorithm (`TCP_NODELAY`). sqlx 0.9.0 stopped
//! setting it (transact-rs/sqlx#4335, a regression of #4022), which cost about 40 ms per TLS handshake
//! and per query sent in two small writes (docs/ci.md, "How fast"); Lifeboat carried a patched copy of
//! sqlx-core 0.9.0 until sqlx-core 0.9.1 shipped the fix (#4336). This test reads the option on the
//! very socket of a connection opened the way the operator opens them, against a listener on
//! loopback that plays a server just long enough to be looked at, so a sqlx upgrade that loses the
//! option fails here on every `cargo test`, without the platform.

use std::time::Duration;

use tokio::{io::AsyncReadExt, net::TcpListener, sync::oneshot};

/// The peer port of socket `fd` when it is a TCP socket, and whether it has `TCP_NODELAY`.
fn tcp_peer_and_nodelay(fd: i32) -> Option<(u16, bool)> {
    // SAFETY: plain getsockopt/getpeername calls on a descriptor this process holds, with buffers of
    // the sizes passed.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(fd, (&raw mut addr).cast(), &mut len) != 0 {
            return None;
        }
        let port = match i32::from(addr.ss_family) {
            libc::AF_INET => {
                u16::from_be((*(&raw const addr).cast::<libc::sockaddr_in>()).sin_port)
            }
            libc::AF_INET6 => {
                u16::from_be((*(&raw const addr).cast::<libc::sockaddr_in6>()).sin6_port)
            }
            _ => return None,
        };
        let mut on: libc::c_int = 0;
        let mut on_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw mut on).cast(),
            &mut on_len,
        ) != 0
        {
            return None;
        }
        Some((port, on != 0))
    }
}

/// This process's TCP sockets connected to `port`, each with whether it has `TCP_NODELAY`.
fn sockets_to(port: u16) -> Vec<(u16, bool)> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(tcp_peer_and_nodelay)
        .filter(|(peer, _)| *peer == port)
        .collect()
}

#[tokio::test]
async fn postgres_connections_disable_nagle() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, seen_rx) = oneshot::channel();
    // The "server": takes the connection, waits for the client's first message (an SSLRequest or a
    // StartupMessage: by then the client's socket is set up as sqlx leaves it), looks at the
    // client's end of it, then hangs up.
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut first = [0u8; 8];
        stream.read_exact(&mut first).await.unwrap();
        let _ = seen_tx.send(sockets_to(port));
    });
    let creds = lifeboat::engines::ServerCredentials {
        host: "127.0.0.1".into(),
        port,
        username: "lifeboat".into(),
        password: "unused".into(),
        sslmode: "prefer".into(),
        ca_pem: None,
    };
    let client = tokio::spawn(async move {
        // The server hangs up before any answer: the connection fails, which is expected here.
        let _ = lifeboat::engines::postgres::connect(&creds, "postgres").await;
    });
    let sockets = tokio::time::timeout(Duration::from_secs(30), seen_rx)
        .await
        .expect("the client's first message within 30 s")
        .expect("the listener looked at the client's socket");
    server.await.unwrap();
    client.await.unwrap();
    assert!(
        !sockets.is_empty(),
        "no TCP socket of this process is connected to port {port}"
    );
    assert!(
        sockets.iter().all(|(_, nodelay)| *nodelay),
        "a PostgreSQL socket has Nagle's algorithm on (TCP_NODELAY unset): {sockets:?}"
    );
}
