//! Source addresses: which local address each load-generator connection
//! comes from, and the ephemeral-port arithmetic that decides it.
//!
//! A TCP connection is named by its 4-tuple (source address, source port,
//! destination address, destination port). To one destination, one source
//! address therefore has at most as many connections as there are
//! ephemeral ports (`net.ipv4.ip_local_port_range`: 32768–60999 here, that
//! is 28 232). Past that, `connect` fails with `EADDRNOTAVAIL`. More
//! connections need more source addresses: on loopback any `127.x.y.z`
//! works without configuration (Linux routes all of `127.0.0.0/8` to `lo`),
//! elsewhere they must be addresses of this machine (`--source-addrs`).
//!
//! Long before the ports run out, `connect` slows down: Linux
//! (`__inet_hash_connect`) tries the ports of one parity first, and only
//! when every one of those is taken walks on to the other half, so past
//! half the range each `connect` first checks some 14 000 taken ports.
//! And the first pass slows down as its half fills: it walks from where
//! the last connect left off, past every port taken, so the last ports of
//! the half cost thousands of steps each. Measured here: 25 000
//! connections to one server from one address (89 % of its ports) were not
//! all connected after 15 s; from two addresses (44 % each) they took
//! 1.7 s. A million from 71 addresses (each filling its first half to
//! 99.8 %) took 73.5 s to connect; from 142 (a quarter of each range),
//! 31.9 s. So the addresses the bench picks itself fill at most a quarter
//! of their ports each (`COMFORTABLE_SHARE`).
//!
//! With source addresses, connection `i` (counted over all threads and
//! processes) comes from address `i mod n`: each socket is created with
//! socket2, bound to `(address, port 0)`, and only then connected. Without
//! them, the kernel picks the source (today's path, `mio`'s `connect`).
//!
//! Invariant: [`plan`] refuses, before anything runs, a number of
//! connections the source addresses cannot carry; the run itself never
//! discovers it as a pile of connect errors.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

/// The ephemeral ports one source address has per destination, from
/// `/proc/sys/net/ipv4/ip_local_port_range` (`None` where it cannot be read:
/// then nothing is refused on its account).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port of the range.
    pub low: u32,
    /// Last port of the range (inclusive).
    pub high: u32,
}

impl PortRange {
    /// This machine's range.
    pub fn of_this_machine() -> Option<PortRange> {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
        let mut fields = text.split_whitespace().map(str::parse::<u32>);
        let (low, high) = (fields.next()?.ok()?, fields.next()?.ok()?);
        (low <= high).then_some(PortRange { low, high })
    }

    /// How many ports it holds.
    pub fn ports(&self) -> usize {
        (self.high - self.low + 1) as usize
    }
}

/// Where the connections come from, as [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sources {
    /// The addresses, round-robin; empty: the kernel's choice.
    pub addrs: Vec<IpAddr>,
    /// Chosen by the bench (127.0.0.x) rather than given by `--source-addrs`.
    pub automatic: bool,
}

/// How much of one address's ports the automatic plan fills: half of what
/// `connect`'s first pass covers (see the module header).
const COMFORTABLE_SHARE: f64 = 0.25;

/// The most loopback source addresses chosen automatically (127.0.0.1 to
/// 127.0.0.254).
const MAX_AUTO_SOURCES: usize = 254;

/// Decide the source addresses for `connections` connections (plus
/// `flooders`, spread over the same addresses) to
/// `target`, given `--source-addrs` (maybe empty) and the port range.
///
/// - Given addresses are used as given (after checking they can carry the load).
/// - Without them, one address is enough if the connections fill at most
///   a quarter of its ports; if not and the target is IPv4 loopback, 127.0.0.1,
///   127.0.0.2, ... as many as keep each at a quarter; otherwise one address as
///   long as its ports suffice at all (slower to connect), else the run is
///   refused with the reason.
pub fn plan(
    given: &[IpAddr],
    target: IpAddr,
    connections: usize,
    flooders: usize,
    range: Option<PortRange>,
) -> Result<Sources, String> {
    if let Some(wrong) = given.iter().find(|a| a.is_ipv4() != target.is_ipv4()) {
        return Err(format!(
            "--source-addrs {wrong}: the target {target} is of the other address family"
        ));
    }
    let Some(range) = range else {
        return Ok(Sources {
            addrs: given.to_vec(),
            automatic: false,
        });
    };
    let ports = range.ports();
    // The busiest source: its round-robin share of the measured
    // connections and of the flooders (both spread over the addresses;
    // with one, the kernel's choice for a loopback target is 127.0.0.1).
    let busiest = |n: usize| connections.div_ceil(n) + flooders.div_ceil(n);
    let range_text = format!(
        "the {ports} ephemeral ports (net.ipv4.ip_local_port_range {}-{}) one source address has per destination",
        range.low, range.high
    );
    if !given.is_empty() {
        let n = given.len();
        if busiest(n) > ports {
            let enough = (1..=connections.max(1))
                .find(|&m| busiest(m) <= ports)
                .map_or("more".to_string(), |m| m.to_string());
            return Err(format!(
                "--source-addrs gives {n} address(es): {connections} connections are up to {} from one, over {range_text}; give {enough} addresses",
                busiest(n)
            ));
        }
        return Ok(Sources {
            addrs: given.to_vec(),
            automatic: false,
        });
    }
    let comfortable = (ports as f64 * COMFORTABLE_SHARE) as usize;
    if busiest(1) <= comfortable {
        return Ok(Sources::default());
    }
    let loopback_v4 = matches!(target, IpAddr::V4(v4) if v4.is_loopback());
    if !loopback_v4 && busiest(1) <= ports {
        return Ok(Sources::default());
    }
    if !loopback_v4 {
        return Err(format!(
            "{} connections to {target} are over {range_text}: give --source-addrs A,B,... (addresses of this machine), or fewer connections",
            connections + flooders
        ));
    }
    let Some(n) = (2..=MAX_AUTO_SOURCES).find(|&n| busiest(n) <= comfortable) else {
        return Err(format!(
            "{} connections to {target} are too many even from {MAX_AUTO_SOURCES} loopback source addresses ({range_text})",
            connections + flooders
        ));
    };
    Ok(Sources {
        addrs: (1..=n as u8)
            .map(|x| IpAddr::V4(Ipv4Addr::new(127, 0, 0, x)))
            .collect(),
        automatic: true,
    })
}

/// Check that every address can be bound here (so a wrong address is one
/// clear line before the run, not a connect error per connection).
pub fn check_bindable(addrs: &[IpAddr]) -> io::Result<()> {
    for &addr in addrs {
        let local = SocketAddr::new(addr, 0);
        let socket = Socket::new(
            Domain::for_address(local),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.bind(&local.into()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("--source-addrs: bind {local}: {e} (not an address of this machine?)"),
            )
        })?;
    }
    Ok(())
}

/// The source for connection number `index` (round-robin), if any.
pub fn source_for(addrs: &[IpAddr], index: usize) -> Option<IpAddr> {
    (!addrs.is_empty()).then(|| addrs[index % addrs.len()])
}

/// Start a non-blocking connect to `addr`, from `source` when given.
/// Like `mio::net::TcpStream::connect`, it returns at once; the stream
/// becomes writable when the connect completes or fails.
pub fn start_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr);
    };
    // mio cannot bind before connecting, so the socket is made here: on
    // Linux socket2 creates it close-on-exec, as mio would.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    allow_port_reuse_across_destinations(&socket);
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        // The normal answer of a non-blocking connect: under way.
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// `IP_BIND_ADDRESS_NO_PORT` (Linux ≥ 4.2): a `bind` to port 0 leaves the
/// port to `connect`, which picks one unique for the whole 4-tuple. Without
/// it `bind` must pick a port before the destination is known, so each
/// bound socket takes a port of its source address for *every*
/// destination, and the other load generators' and tests' connections from
/// the same address eat into the same range. Best effort: elsewhere the
/// bind just picks the port itself.
fn allow_port_reuse_across_destinations(socket: &Socket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads `on` (an int, its size given) on a socket we own.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Option<PortRange> = Some(PortRange {
        low: 32768,
        high: 60999,
    });

    fn loopback() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn a_range_counts_both_of_its_ends() {
        assert_eq!(HERE.unwrap().ports(), 28_232);
    }

    #[test]
    fn connections_within_a_quarter_of_one_address_s_ports_need_no_source_address() {
        assert_eq!(
            plan(&[], loopback(), 7_058, 0, HERE),
            Ok(Sources::default())
        );
    }

    #[test]
    fn past_a_quarter_of_one_address_s_ports_loopback_spreads_over_127_0_0_x() {
        // Past half, every connect walks the taken half first (25 000 from
        // one address did not finish connecting in 15 s here), and the
        // first half slows as it fills (a million: 73.5 s from 71
        // addresses, 31.9 s from 142).
        let sources = plan(&[], loopback(), 25_000, 0, HERE).unwrap();
        assert!(sources.automatic);
        assert_eq!(sources.addrs, [v4(1), v4(2), v4(3), v4(4)]);
        let sources = plan(&[], loopback(), 100_000, 0, HERE).unwrap();
        assert_eq!(sources.addrs.len(), 15, "6 667 each, under 7 058");
        let sources = plan(&[], loopback(), 1_000_000, 0, HERE).unwrap();
        assert_eq!(sources.addrs.len(), 142);
        // Flooders are spread over the addresses too, and count with them.
        let sources = plan(&[], loopback(), 28_232, 10, HERE).unwrap();
        assert_eq!(sources.addrs.len(), 5);
        // 19 000 flooders beside 50 measured: three addresses, not a refusal.
        let sources = plan(&[], loopback(), 50, 19_000, HERE).unwrap();
        assert_eq!(sources.addrs, [v4(1), v4(2), v4(3)]);
    }

    #[test]
    fn another_target_uses_one_address_while_its_ports_suffice_at_all() {
        let target: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(plan(&[], target, 28_232, 0, HERE), Ok(Sources::default()));
    }

    #[test]
    fn past_one_address_s_ports_another_target_is_refused_with_the_reason() {
        let target: IpAddr = "192.0.2.1".parse().unwrap();
        let refusal = plan(&[], target, 30_000, 0, HERE).unwrap_err();
        assert!(refusal.contains("28232 ephemeral ports"), "{refusal}");
        assert!(refusal.contains("--source-addrs"), "{refusal}");
    }

    #[test]
    fn given_addresses_are_used_when_they_suffice_and_refused_when_not() {
        let given = [v4(2), v4(3)];
        assert_eq!(
            plan(&given, loopback(), 50_000, 0, HERE).unwrap().addrs,
            given
        );
        let refusal = plan(&given, loopback(), 60_000, 0, HERE).unwrap_err();
        assert!(refusal.contains("give 3 addresses"), "{refusal}");
        let v6: IpAddr = "::1".parse().unwrap();
        assert!(plan(&[v6], loopback(), 1, 0, HERE).is_err());
    }

    #[test]
    fn without_a_known_port_range_nothing_is_refused() {
        assert_eq!(
            plan(&[], loopback(), 1_000_000, 0, None),
            Ok(Sources::default())
        );
    }

    #[test]
    fn connection_i_comes_from_address_i_mod_n() {
        let addrs = [v4(2), v4(3)];
        let picked: Vec<_> = (0..4).map(|i| source_for(&addrs, i).unwrap()).collect();
        assert_eq!(picked, [v4(2), v4(3), v4(2), v4(3)]);
        assert_eq!(source_for(&[], 7), None);
    }
}
