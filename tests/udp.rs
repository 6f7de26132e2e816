//! UDP as a client sees it: IPv4 and IPv6 wildcards side by side on one
//! port, and replies that come back from the address the client wrote to.

mod support;

use std::net::{SocketAddr, UdpSocket};

use echo_reactor::protocol::Echo;
use echo_reactor::sockets::bind_udp;
use echo_reactor::Config;
use support::{TestServer, DEADLINE};

/// A client on `local` that gives up on a reply after [`DEADLINE`].
fn client(local: &str) -> UdpSocket {
    let client = UdpSocket::bind(local).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    client
}

/// A UDP port free on the IPv6 wildcard right now (the probe socket is closed).
fn free_udp_port() -> u16 {
    let probe = bind_udp("[::]:0".parse().unwrap()).unwrap();
    probe.local_addr().unwrap().port()
}

fn udp_only(addrs: Vec<SocketAddr>) -> Config {
    Config {
        listen: Vec::new(),
        udp: addrs,
        ..Config::default()
    }
}

#[test]
fn the_ipv6_and_ipv4_wildcards_of_one_port_are_served_side_by_side() {
    let port = free_udp_port();
    let server = TestServer::start(
        udp_only(vec![
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from(([0, 0, 0, 0], port)),
        ]),
        Echo,
    );
    for (local, target) in [
        ("127.0.0.1:0", format!("127.0.0.1:{port}")),
        ("[::1]:0", format!("[::1]:{port}")),
    ] {
        let client = client(local);
        client.connect(&target).unwrap();
        client.send(b"both").unwrap();
        let mut buf = [0u8; 16];
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"both", "via {target}");
    }
    server.stop();
}

#[test]
fn a_wildcard_server_answers_from_the_address_the_client_wrote_to() {
    let server = TestServer::start(udp_only(vec!["0.0.0.0:0".parse().unwrap()]), Echo);
    let port = server.udp_addr.unwrap().port();
    // All of 127/8 is loopback on Linux; routing would answer from 127.0.0.1.
    let client = client("127.0.0.1:0");
    client.connect(("127.0.0.2", port)).unwrap(); // drops datagrams from any other address
    client.send(b"hello").unwrap();
    let mut buf = [0u8; 16];
    let n = client
        .recv(&mut buf)
        .expect("a reply from 127.0.0.2, where the request went");
    assert_eq!(&buf[..n], b"hello");
    server.stop();
}
