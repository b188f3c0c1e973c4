//! The shared conformance suite over real loopback sockets.

use pop3_conformance::{Launcher, Listen, Running, Spec};

struct AsyncStd;

impl Launcher for AsyncStd {
    fn launch(spec: Spec) -> Running {
        pop3_conformance::start(spec, |service, listen, ready| {
            async_std::task::block_on(async {
                let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .unwrap();
                ready(listener.local_addr().unwrap());
                match listen {
                    Listen::Plain => pop3_async_std::serve(&service, listener).await.unwrap(),
                    Listen::ImplicitTls => {
                        pop3_async_std::serve_tls(&service, listener).await.unwrap()
                    }
                }
            });
        })
    }
}

pop3_conformance::suite!(AsyncStd);

#[test]
fn stuck_handler_is_abandoned_at_shutdown() {
    pop3_conformance::checks::stuck_handler_is_abandoned_at_shutdown::<AsyncStd>();
}
