//! A blocking POP3 server (a thread per connection) over an in-memory maildrop.
//!
//! ```sh
//! cargo run -p pop3-std --example std_memory_server
//! curl -u demo:demo pop3://127.0.0.1:1110/1
//! ```

use pop3_std::memory::MemoryStore;
use pop3_std::{Config, Service};

fn main() -> std::io::Result<()> {
    let store = MemoryStore::new();
    store.add_user("demo", "demo");
    store.deliver(
        "demo",
        "From: std@example.org\r\nSubject: Hello\r\n\r\nServed by pop3-std.\r\n",
    );
    let config = Config::builder()
        .hostname("localhost")
        .build()
        .expect("valid config");
    let service = Service::new(config, move |_conn| Ok(store.handler())).max_connections(64);
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1110".into());
    println!("POP3 on {addr}: user demo, password demo");
    pop3_std::bind_and_serve(&service, addr.as_str())
}
