//! The shared conformance suite over real loopback sockets, plus the idle
//! timeout under tokio's paused clock.

use std::time::Duration;

use pop3_conformance::{Launcher, Listen, Running, Spec};
use pop3_tokio::memory::MemoryStore;
use pop3_tokio::{ConnectionInfo, Service};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

struct Tokio;

impl Launcher for Tokio {
    fn launch(spec: Spec) -> Running {
        pop3_conformance::start(spec, |service, listen, ready| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready(listener.local_addr().unwrap());
                match listen {
                    Listen::Plain => pop3_tokio::serve(&service, listener).await.unwrap(),
                    Listen::ImplicitTls => pop3_tokio::serve_tls(&service, listener).await.unwrap(),
                }
            });
        })
    }
}

pop3_conformance::suite!(Tokio);

#[test]
fn stuck_handler_is_abandoned_at_shutdown() {
    pop3_conformance::checks::stuck_handler_is_abandoned_at_shutdown::<Tokio>();
}

/// The real 10-minute idle timer, under tokio's paused clock: the adapter
/// reads time from tokio, so the test takes milliseconds.
#[tokio::test(start_paused = true)]
async fn idle_timeout_with_paused_time() {
    let store = MemoryStore::new();
    store.add_user("u", "p");
    store.deliver("u", "Subject: x\r\n\r\nbody\r\n");
    let config = pop3_tokio::Config::builder().build().unwrap();
    let service = Service::new(config, move |_: &ConnectionInfo| Ok(store.handler()));
    let (client, server_side) = tokio::io::duplex(4096);
    let info = ConnectionInfo::new(Some("127.0.0.1:1".parse().unwrap()), None);
    let session =
        tokio::spawn(
            async move { pop3_tokio::serve_connection(&service, server_side, info).await },
        );
    let (read, mut write) = tokio::io::split(client);
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    assert_eq!(line, "+OK POP3 server ready\r\n");
    write
        .write_all(b"USER u\r\nPASS p\r\nDELE 1\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        line.clear();
        read.read_line(&mut line).await.unwrap();
    }
    assert_eq!(line, "+OK message 1 deleted\r\n");
    tokio::time::sleep(Duration::from_secs(599)).await;
    write.write_all(b"NOOP\r\n").await.unwrap();
    line.clear();
    read.read_line(&mut line).await.unwrap();
    assert_eq!(line, "+OK\r\n", "still alive after 9 min 59 s");
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    read.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "autologout sends nothing");
    assert_eq!(started.elapsed(), Duration::from_secs(600));
    let end = session.await.unwrap().unwrap();
    assert_eq!(end.reason, pop3_proto::CloseReason::IdleTimeout);
}

/// A write-buffering stream (as TLS streams are) still gets every reply:
/// the adapter flushes after each write.
#[tokio::test]
async fn buffered_streams_are_flushed() {
    let store = MemoryStore::new();
    store.add_user("u", "p");
    let service = Service::new(
        pop3_tokio::Config::builder().build().unwrap(),
        move |_: &ConnectionInfo| Ok(store.handler()),
    );
    let (client, server_side) = tokio::io::duplex(65536);
    let info = ConnectionInfo::new(None, None);
    tokio::spawn(async move {
        pop3_tokio::serve_connection(&service, tokio::io::BufWriter::new(server_side), info).await
    });
    let mut client = BufReader::new(client);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_line(&mut line))
        .await
        .expect("greeting arrives")
        .unwrap();
    assert_eq!(line, "+OK POP3 server ready\r\n");
}
