//! `serve` itself: wildcard listeners stop on shutdown, and a configuration
//! this adapter cannot honour is refused before serving.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use pop3_std::{memory::MemoryStore, Config, Service};

fn service(config: Config) -> Service<impl pop3_std::NewHandler<pop3_std::memory::MemoryHandler>> {
    let store = MemoryStore::new();
    store.add_user("alice", "secret");
    Service::new(config, move |_conn: &pop3_std::ConnectionInfo| {
        Ok(store.handler())
    })
    .shutdown_grace(Duration::from_secs(2))
}

#[test]
fn wildcard_listener_stops_on_shutdown() {
    let service = service(Config::builder().build().unwrap());
    // 0.0.0.0 is not an address to connect to everywhere: the accept loop
    // must still be woken.
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn({
        let service = service.clone();
        move || pop3_std::serve(&service, listener)
    });
    // A client idle in AUTHORIZATION is told and closed.
    let mut client = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("+OK"), "{greeting}");
    client.write_all(b"NOOP\r\n").unwrap();
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    service.shutdown_handle().begin();
    let mut last = String::new();
    reader.read_line(&mut last).unwrap();
    assert_eq!(last, "-ERR [SYS/TEMP] server shutting down\r\n");
    server.join().unwrap().unwrap();
}

#[test]
fn stls_without_tls_is_refused_before_serving() {
    let service = service(Config::builder().stls(true).build().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = pop3_std::serve(&service, listener).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
}

#[test]
fn implicit_tls_without_a_certificate_is_refused_before_serving() {
    let service = service(Config::builder().build().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = pop3_std::serve_tls(&service, listener).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
}
