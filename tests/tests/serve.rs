//! The coordinator's accept loop over real loopback sockets: connections that
//! send nothing, send their head slowly, idle after a request, or stall their
//! body are closed after the configured times, however many there are.

use std::time::{Duration, Instant};

use tillswarm_coordinator::auth::{Caller, Role};
use tillswarm_coordinator::service::access::NewTokenInput;
use tillswarm_coordinator::{Config, Coordinator, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(1);

struct Server {
    addr: std::net::SocketAddr,
    token: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Coordinator::open(Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .await
    .expect("coordinator");
    let token = c
        .create_token(
            NewTokenInput {
                name: "t".into(),
                role: Role::Admin,
                expires_days: None,
            },
            &Caller::system("test"),
        )
        .await
        .expect("token")
        .token_secret;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        header_timeout: LIMIT,
        body_timeout: LIMIT,
        ..Default::default()
    };
    tokio::spawn(tillswarm_coordinator::serve_with(
        c,
        listener,
        options,
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        token,
        _stop: stop,
        _dir: dir,
    }
}

/// Reads until the server closes the connection; returns what it sent and
/// how long that took. Panics if it is still open after `within`.
async fn read_until_closed(conn: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within, conn.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {within:?}; received {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    started.elapsed(),
                );
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_header_timeout() {
    let s = server().await;
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    let (_, took) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(
        took >= LIMIT - Duration::from_millis(100),
        "closed early: {took:?}"
    );
}

#[tokio::test]
async fn a_client_sending_its_head_slowly_is_closed() {
    let s = server().await;
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    let started = Instant::now();
    // One header line every 300 ms: each byte arrives well within any
    // per-read limit, but the head is never complete.
    conn.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if conn
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let (_, _) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let s = server().await;
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (sent, took) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    assert!(took >= LIMIT - Duration::from_millis(100), "{took:?}");
}

#[tokio::test]
async fn two_hundred_silent_clients_are_all_closed() {
    let s = server().await;
    let mut conns = Vec::new();
    for _ in 0..200 {
        conns.push(TcpStream::connect(s.addr).await.expect("connect"));
    }
    tokio::time::sleep(LIMIT + Duration::from_millis(500)).await;
    let mut open = 0;
    for conn in &mut conns {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), conn.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            _ => open += 1,
        }
    }
    assert_eq!(open, 0, "{open} of 200 silent connections still open");
    // And the server still answers.
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (sent, _) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
}

#[tokio::test]
async fn a_stalled_body_is_refused_with_408() {
    let s = server().await;
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        s.token
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let (sent, took) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn a_stalled_upload_is_refused_and_leaves_nothing() {
    let s = server().await;
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/packages?name=demo&version=1.0 HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 1000000\r\n\r\n",
        s.token
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    conn.write_all(&[0u8; 50_000])
        .await
        .expect("some of the body");
    let (sent, took) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(sent.starts_with("HTTP/1.1 4"), "{sent}");
    assert!(sent.contains("paused"), "{sent}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn an_upload_trickled_below_the_minimum_rate_is_refused() {
    let s = server().await;
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/packages?name=demo&version=1.0 HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 1000000\r\n\r\n",
        s.token
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    // Ten bytes every 300 ms: never a pause of a second, but far below the
    // minimum average rate once the first second is over.
    let started = Instant::now();
    let reader = async {
        let mut conn = conn;
        let writer = async {
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if conn.write_all(&[0u8; 10]).await.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(8), writer)
            .await
            .ok();
        read_until_closed(&mut conn, Duration::from_secs(5)).await
    };
    let (sent, _) = reader.await;
    assert!(sent.starts_with("HTTP/1.1 4"), "{sent}");
    assert!(sent.contains("slower"), "{sent}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn at_the_connection_cap_a_new_client_waits_for_a_free_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Coordinator::open(Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .await
    .expect("coordinator");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        header_timeout: LIMIT,
        max_connections: 2,
        ..Default::default()
    };
    tokio::spawn(tillswarm_coordinator::serve_with(
        c,
        listener,
        options,
        async {
            let _ = stopped.await;
        },
    ));
    let _silent: Vec<TcpStream> = vec![
        TcpStream::connect(addr).await.expect("connect"),
        TcpStream::connect(addr).await.expect("connect"),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut third = TcpStream::connect(addr).await.expect("connect (backlog)");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (sent, _) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    // Served only once the silent two timed out and freed their slots.
    assert!(
        started.elapsed() >= LIMIT - Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}
