//! The shared conformance suite over real loopback sockets.

use pop3_conformance::{Launcher, Running, Spec};
use pop3_std::Server;

struct Std;

impl Launcher for Std {
    fn launch(spec: Spec) -> Running {
        let mut server = Server::new(spec.config.clone(), spec.new_handler())
            .shutdown_grace(spec.shutdown_grace);
        if let Some(max) = spec.max_connections {
            server = server.max_connections(max);
        }
        let shutdown = server.shutdown_handle();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || server.serve(listener).unwrap());
        Running::new(addr, shutdown, &spec, thread)
    }
}

pop3_conformance::suite!(Std);
