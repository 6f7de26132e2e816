//! Scraping `--metrics`: one request read to the end, and a sample's
//! value in the text it returns.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::{connect, DEADLINE};

/// `metrics http://127.0.0.1:PORT/metrics` -> the address.
pub fn metrics_addr(line: &str) -> SocketAddr {
    line.strip_prefix("metrics http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("not a metrics line: {line:?}"))
        .parse()
        .unwrap()
}

/// One `GET`, read to the end (the server closes): (status, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
}

pub fn request(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut stream = connect(addr);
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status, body)
}

/// A sample's value in a scrape (`NAME VALUE`, `NAME{labels} VALUE`).
pub fn sample(scrape: &str, name: &str) -> Option<u64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

pub fn scrape_value(metrics: SocketAddr, name: &str) -> u64 {
    let (status, body) = get(metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    sample(&body, name).unwrap_or_else(|| panic!("{name} not in the scrape:\n{body}"))
}

/// Poll `scrape_value` until `done` says so, with a deadline.
pub fn wait_for_value(metrics: SocketAddr, name: &str, done: impl Fn(u64) -> bool) -> u64 {
    let start = Instant::now();
    loop {
        let value = scrape_value(metrics, name);
        if done(value) {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "{name} stayed at {value}");
        thread::sleep(Duration::from_millis(20));
    }
}
