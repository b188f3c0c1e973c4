//! A POP3 server on async-std over an in-memory maildrop.
//!
//! ```sh
//! cargo run -p pop3-async-std --example async_std_memory_server
//! curl -u demo:demo pop3://127.0.0.1:1110/1
//! ```

use pop3_async_std::memory::MemoryStore;
use pop3_async_std::{Config, Service};

fn main() -> std::io::Result<()> {
    let store = MemoryStore::new();
    store.add_user("demo", "demo");
    store.deliver(
        "demo",
        "From: async-std@example.org\r\nSubject: Hello\r\n\r\nServed by pop3-async-std.\r\n",
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
    async_std::task::block_on(pop3_async_std::bind_and_serve(&service, addr.as_str()))
}
