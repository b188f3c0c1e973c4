//! The shared conformance suite over real loopback sockets.

use pop3_async_std::Server;
use pop3_conformance::{Launcher, Running, Spec};

struct AsyncStd;

impl Launcher for AsyncStd {
    fn launch(spec: Spec) -> Running {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut server = Server::new(spec.config.clone(), spec.new_handler())
            .shutdown_grace(spec.shutdown_grace);
        if let Some(max) = spec.max_connections {
            server = server.max_connections(max);
        }
        let shutdown = server.shutdown_handle();
        let thread = std::thread::spawn(move || {
            async_std::task::block_on(async {
                let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                server.serve(listener).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Running::new(addr, shutdown, &spec, thread)
    }
}

pop3_conformance::suite!(AsyncStd);
