//! The shared conformance suite over real loopback sockets.

use pop3_conformance::{Launcher, Listen, Running, Spec};

struct Std;

impl Launcher for Std {
    fn launch(spec: Spec) -> Running {
        pop3_conformance::start(spec, |service, listen, ready| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            ready(listener.local_addr().unwrap());
            match listen {
                Listen::Plain => pop3_std::serve(&service, listener).unwrap(),
                Listen::ImplicitTls => pop3_std::serve_tls(&service, listener).unwrap(),
            }
        })
    }
}

pop3_conformance::suite!(Std);
