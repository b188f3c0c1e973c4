//! A POP3 server on tokio over an in-memory maildrop.
//!
//! ```sh
//! cargo run -p pop3-tokio --example tokio_memory_server
//! curl -u demo:demo pop3://127.0.0.1:1110/1
//! ```
//! Ctrl-C shuts it down gracefully.

use pop3_tokio::memory::MemoryStore;
use pop3_tokio::{Config, Service};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let store = MemoryStore::new();
    store.add_user("demo", "demo");
    store.deliver(
        "demo",
        "From: tokio@example.org\r\nSubject: Hello\r\n\r\nServed by pop3-tokio.\r\n",
    );
    let config = Config::builder()
        .hostname("localhost")
        .build()
        .expect("valid config");
    let service = Service::new(config, move |_conn| Ok(store.handler())).max_connections(64);
    let shutdown = service.shutdown_handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.begin();
    });
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1110".into());
    println!("POP3 on {addr}: user demo, password demo");
    pop3_tokio::bind_and_serve(&service, addr.as_str()).await
}
