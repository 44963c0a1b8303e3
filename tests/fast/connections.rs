//! Hostile connections (docs/security.md, finding 4), on raw sockets with bounded waits: a
//! client that connects and stays silent, trickles its request line, keeps an idle connection,
//! stalls its body or declares a huge one, opens more connections than the server allows, or
//! speaks HTTP/2, is closed or answered within the server's deadlines, and the server serves on.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{self, InProcess};

/// Every wait of this file ends within this, so a server without the deadline fails the test
/// instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(8);

async fn connect(server: &InProcess) -> TcpStream {
    let address = server.base.trim_start_matches("http://");
    TcpStream::connect(address).await.expect("connect")
}

/// How long until the server closes `stream` (reading and discarding what it sends), or
/// `None` if it is still open after [`PATIENCE`].
async fn closed_after(mut stream: TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    while started.elapsed() < PATIENCE {
        match tokio::time::timeout(PATIENCE - started.elapsed(), stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => break,
        }
    }
    None
}

/// One answer read off `stream`: its status and JSON body (`Value::Null` when it has none).
async fn answer(stream: &mut TcpStream) -> (u16, Value) {
    let (status, _head, body) = answer_with_head(stream).await;
    (status, body)
}

/// One answer read off `stream`: its status, its head in lower case, and its JSON body.
async fn answer_with_head(stream: &mut TcpStream) -> (u16, String, Value) {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().expect("a content length"));
            if bytes.len() >= end + 4 + length {
                let status = head[9..12].parse().expect("a status");
                let body = &bytes[end + 4..end + 4 + length];
                let json = serde_json::from_slice(body).unwrap_or(Value::Null);
                return (status, head, json);
            }
        }
        let left = PATIENCE
            .checked_sub(started.elapsed())
            .expect("no answer in time");
        let n = tokio::time::timeout(left, stream.read(&mut chunk))
            .await
            .expect("no answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Reads an error answer off `stream` and checks its status and `error_type`.
async fn expect_error(stream: &mut TcpStream, status: u16, error_type: &str, what: &str) {
    let (got, body) = answer(stream).await;
    assert_eq!(
        (got, body["error_type"].as_str()),
        (status, Some(error_type)),
        "{what}: {body}"
    );
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: entroll\r\n\r\n";

#[tokio::test]
async fn silent_trickling_and_idle_connections_are_closed_at_the_header_deadline() {
    let server = harness::start(|c| c.header_timeout_ms = 1_000);
    let timeouts = "entroll_connection_timeouts_total{deadline=\"header\"}";

    // Connects and sends nothing.
    let silent = tokio::spawn(closed_after(connect(&server).await));
    // Sends its request line one byte every 150 ms: 3.5 s for the line alone.
    let mut trickle = connect(&server).await;
    let trickling = tokio::spawn(async move {
        for &b in b"GET /health HTTP/1.1\r\n" {
            if trickle.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        closed_after(trickle).await
    });
    // A kept-alive connection: two requests 300 ms apart are served on it, then it idles.
    let mut idle = connect(&server).await;
    for _ in 0..2 {
        idle.write_all(HEALTH).await.unwrap();
        assert_eq!(answer(&mut idle).await.0, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let idle = closed_after(idle).await;

    for (what, closed) in [
        ("silent", silent.await.unwrap()),
        ("trickling", trickling.await.unwrap()),
        ("idle", idle),
    ] {
        let after = closed.unwrap_or_else(|| panic!("the {what} connection is still open"));
        assert!(
            after < Duration::from_secs(5),
            "{what}: closed only after {after:?}"
        );
    }
    assert!(server.metric(timeouts).await >= 3.0);
    // The server serves on.
    let mut fresh = connect(&server).await;
    fresh.write_all(HEALTH).await.unwrap();
    assert_eq!(answer(&mut fresh).await.0, 200);
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_a_declared_huge_one_413_before_it_is_sent() {
    let server = harness::start(|c| c.body_timeout_ms = 1_000);

    // Declares 1,000 bytes, sends 10, stalls.
    let mut stalled = connect(&server).await;
    stalled
        .write_all(b"POST /rollouts HTTP/1.1\r\nhost: entroll\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"prompts\"")
        .await
        .unwrap();
    let started = Instant::now();
    expect_error(&mut stalled, 408, "timeout", "a stalled body").await;
    assert!(started.elapsed() < Duration::from_secs(5));

    // Declares 40 MB (over the 32 MiB limit) and sends none of it: refused from the header.
    for path in ["/rollouts", "/weights"] {
        let mut huge = connect(&server).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: entroll\r\ncontent-type: application/json\r\ncontent-length: 40000000\r\n\r\n"
        );
        huge.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        expect_error(&mut huge, 413, "validation", path).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path}: the 413 waited for the body"
        );
    }
    assert_eq!(
        server
            .metric("entroll_requests_failed_total{error_type=\"timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_says_close_and_one_after_keeps_the_connection() {
    let server = harness::start(|_| {});
    let says_close = |head: &str| head.lines().any(|l| l.trim() == "connection: close");

    // Declares 40 MB and sends none of it: the 413 comes before the body, so the server will
    // not read on; the answer says so, and the connection closes.
    let mut huge = connect(&server).await;
    huge.write_all(b"POST /rollouts HTTP/1.1\r\nhost: entroll\r\ncontent-type: application/json\r\ncontent-length: 40000000\r\n\r\n")
        .await
        .unwrap();
    let (status, head, _) = answer_with_head(&mut huge).await;
    assert_eq!(status, 413);
    assert!(
        says_close(&head),
        "a 413 before the body kept the connection: {head}"
    );
    assert!(
        closed_after(huge).await.is_some(),
        "the connection stayed open"
    );

    // A body read whole and refused (422) keeps the connection for the next request.
    let mut kept = connect(&server).await;
    let body = r#"{"prompts": [{"text": ""}]}"#;
    let request = format!(
        "POST /rollouts HTTP/1.1\r\nhost: entroll\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    kept.write_all(request.as_bytes()).await.unwrap();
    let (status, head, _) = answer_with_head(&mut kept).await;
    assert_eq!(status, 422);
    assert!(
        !says_close(&head),
        "a body read whole closed the connection: {head}"
    );
    kept.write_all(HEALTH).await.unwrap();
    assert_eq!(answer(&mut kept).await.0, 200);
}

#[tokio::test]
async fn connections_over_the_cap_are_answered_503_and_one_closing_makes_room() {
    let server = harness::start(|c| c.max_connections = 3);
    // Three kept-alive connections, each proven accepted by an answer.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect(&server).await;
        c.write_all(HEALTH).await.unwrap();
        assert_eq!(answer(&mut c).await.0, 200);
        held.push(c);
    }
    let mut over = connect(&server).await;
    // The answer is written on accept; the request may or may not reach the server first.
    let _ = over.write_all(HEALTH).await;
    expect_error(&mut over, 503, "overloaded", "a fourth connection").await;
    assert!(
        closed_after(over).await.is_some(),
        "the refused connection stays open"
    );

    // One held connection closes: a new one is served.
    drop(held.pop());
    let started = Instant::now();
    loop {
        let mut c = connect(&server).await;
        let _ = c.write_all(HEALTH).await;
        match answer(&mut c).await.0 {
            200 => break,
            503 if started.elapsed() < PATIENCE => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("no room after a connection closed: {other}"),
        }
    }
    // The metrics need a connection too: room is made first.
    drop(held);
    let started = Instant::now();
    while server.metric("entroll_connections_refused_total").await < 1.0 {
        assert!(started.elapsed() < PATIENCE, "the refusal was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_refused() {
    // h2c: a client that opens with HTTP/2's preface and an empty SETTINGS frame. A server that
    // spoke HTTP/2 would answer with its own SETTINGS frame (a 9-byte header of type 4) and
    // keep the connection, on which one client could open hundreds of streams.
    let server = harness::start(|_| {});
    let mut h2 = connect(&server).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, h2.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the HTTP/2 connection stays open");
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 "),
        "an HTTP/2 answer: {:?}",
        &got[..got.len().min(32)]
    );
}
