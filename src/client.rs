//! `echo-reactor client`: the classic tutorial client, done carefully.
//!
//! It is deliberately *blocking* — one connection, one conversation, the
//! way Python's `socket.create_connection` + `sendall` + `recv` client works
//! — because a client that talks to one server has nothing to multiplex.
//! (The load generator, which drives thousands of connections, is built on
//! mio like the server.)
//!
//! Messages come from the command line, from an interactive `>>> ` prompt
//! (when stdin is a terminal), or one per line from stdin. For line
//! protocols each message is sent with `\n` and one reply line is printed;
//! `--raw` sends it as is and prints one read's worth.
//!
//! The handshake is recognised from either side: without a key, a server
//! that speaks first with 32 bytes (the challenge) is asking for one; with
//! a key, a server that closes before its first reply refused it. Both are
//! named instead of printing the challenge as garbage. So are the other
//! servers set up otherwise than the client was told: one that speaks
//! first unasked (a `greet` welcome) has that printed as its greeting, so
//! replies stay in step; one that closes before its first reply may want
//! a PROXY header. UDP uses a connected socket, so the kernel's "port
//! unreachable" comes back as "connection refused" instead of a timeout.

use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth_key::load_auth_key;
use crate::protocol::{ProtocolName, CHALLENGE_BYTES};
use crate::proxy_header::{encode, encode_unknown, HeaderVersion};
use crate::units::{parse_addr, parse_secs, usage_error};

/// How long to wait for a reply before giving up (`--timeout` overrides).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a UDP reply (datagrams can be lost; `--timeout` overrides).
pub const UDP_REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Without a key, how long the client waits after connecting for bytes the
/// server sends unasked: a handshake challenge arrives at once, and no
/// protocol but `greet` speaks first.
pub const CHALLENGE_WAIT: Duration = Duration::from_millis(100);

/// Flags of `echo-reactor client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server address.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8888",
        value_parser = parse_addr,
        conflicts_with = "unix"
    )]
    pub addr: SocketAddr,
    /// Connect to a Unix stream socket instead.
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Send each message as one UDP datagram.
    #[arg(long, conflicts_with = "unix")]
    pub udp: bool,
    /// Answer the server's HMAC challenge with this key file (or ECHO_REACTOR_AUTH_KEY).
    #[arg(long, value_name = "PATH")]
    pub auth_key_file: Option<PathBuf>,
    /// Begin the connection with a PROXY protocol header (v1 or v2) naming
    /// this client's own address, as a load balancer would (for a server
    /// run with --proxy-protocol; over --unix the header names no address).
    #[arg(long, value_name = "VERSION", value_enum, conflicts_with = "udp")]
    pub proxy_header: Option<HeaderVersion>,
    /// What the server speaks (`greet`: print the welcome line first).
    #[arg(long, value_enum, default_value_t = ProtocolName::Echo)]
    pub protocol: ProtocolName,
    /// Send messages as given (no `\n` added) and print one read's worth per message.
    #[arg(long)]
    pub raw: bool,
    /// How long to wait for each reply [default: 30 s for TCP and Unix, 5 s for UDP].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<Duration>,
    /// Messages to send; none: read them from stdin (with a prompt on a terminal).
    /// Without --raw a message may not contain a newline (it would be two).
    pub messages: Vec<String>,
}

/// A connected stream socket of either kind.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(timeout),
            Conn::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where messages come from.
enum Source {
    Args(std::vec::IntoIter<String>),
    Prompt,
    Lines(io::Lines<io::StdinLock<'static>>),
}

impl Source {
    fn new(messages: &[String]) -> Source {
        if !messages.is_empty() {
            Source::Args(Vec::from(messages).into_iter())
        } else if io::stdin().is_terminal() {
            Source::Prompt
        } else {
            Source::Lines(io::stdin().lock().lines())
        }
    }

    /// The next message, or `None` at the end of input.
    fn next(&mut self) -> io::Result<Option<String>> {
        match self {
            Source::Args(args) => Ok(args.next()),
            Source::Lines(lines) => lines.next().transpose(),
            Source::Prompt => loop {
                print!(">>> ");
                io::stdout().flush()?;
                let mut line = String::new();
                if io::stdin().read_line(&mut line)? == 0 {
                    println!();
                    return Ok(None);
                }
                let line = line.trim_end_matches(['\n', '\r']);
                if !line.is_empty() {
                    return Ok(Some(line.to_string())); // empty input is skipped
                }
            },
        }
    }

    fn is_interactive(&self) -> bool {
        matches!(self, Source::Prompt)
    }

    /// Messages from the command line not taken yet.
    fn left_over(&self) -> usize {
        match self {
            Source::Args(args) => args.len(),
            _ => 0,
        }
    }
}

fn action_error(action: &str, e: io::Error) -> io::Error {
    let what = match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "no reply in time".to_string(),
        _ => e.to_string(),
    };
    io::Error::new(e.kind(), format!("{action}: {what}"))
}

/// Run the client; errors are one line each.
pub fn run(args: &ClientArgs) -> io::Result<()> {
    if !args.raw {
        // A line protocol would take "a\nb" as two messages and answer
        // twice, and every later reply would be printed one message late.
        if let Some(i) = args.messages.iter().position(|m| m.contains('\n')) {
            return Err(usage_error(format!(
                "message {} contains a newline, which a line protocol takes as two messages: \
                 give them as two arguments, or use --raw to send it as is",
                i + 1
            )));
        }
    }
    let key = load_auth_key(args.auth_key_file.as_deref())?;
    if args.udp {
        if key.is_some() {
            return Err(usage_error(
                "--udp cannot do the auth handshake (--auth-key-file or ECHO_REACTOR_AUTH_KEY)",
            ));
        }
        return run_udp(args);
    }
    let reply_timeout = args.timeout.unwrap_or(REPLY_TIMEOUT);
    let (conn, peer) = match &args.unix {
        Some(path) => {
            let stream = UnixStream::connect(path)
                .map_err(|e| action_error(&format!("connect unix {}", path.display()), e))?;
            stream.set_read_timeout(Some(reply_timeout))?;
            (Conn::Unix(stream), format!("unix {}", path.display()))
        }
        None => {
            let stream = TcpStream::connect(args.addr)
                .map_err(|e| action_error(&format!("connect {}", args.addr), e))?;
            stream.set_read_timeout(Some(reply_timeout))?;
            stream.set_nodelay(true)?;
            (Conn::Tcp(stream), args.addr.to_string())
        }
    };
    let mut writer = conn.try_clone()?;
    if let Some(version) = args.proxy_header {
        // First on the wire, before the server says anything (a greeting or
        // a challenge comes only once the header is in).
        let header = match &conn {
            Conn::Tcp(stream) => encode(version, stream.local_addr()?, stream.peer_addr()?),
            Conn::Unix(_) => encode_unknown(version),
        };
        writer
            .write_all(&header)
            .map_err(|e| action_error(&format!("send the PROXY header to {peer}"), e))?;
    }
    let mut reader = BufReader::new(conn);
    let mut stdout = io::stdout().lock();

    let answered = key.is_some();
    if let Some(key) = key {
        let mut challenge = [0u8; CHALLENGE_BYTES];
        reader
            .read_exact(&mut challenge)
            .map_err(|e| action_error(&format!("read the challenge from {peer}"), e))?;
        writer
            .write_all(&key.answer(&challenge))
            .map_err(|e| action_error(&format!("answer the challenge of {peer}"), e))?;
    } else {
        // greet speaks first anyway: wait for its first bytes as long as for a reply.
        let wait = if args.protocol == ProtocolName::Greet {
            reply_timeout
        } else {
            CHALLENGE_WAIT
        };
        if looks_like_a_challenge(&mut reader, wait, reply_timeout)? {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{peer}: the server asks for authentication (use --auth-key-file, or set ECHO_REACTOR_AUTH_KEY)"
                ),
            ));
        }
    }
    let refused = |e: io::Error| first_reply_error(e, answered, args.proxy_header.is_some(), &peer);
    // A server that spoke first, unasked, when we were not told it would:
    // taken as a reply, its greeting would be printed for our first message
    // and every reply after it one message late. Print it as the greeting.
    let greets_unasked = args.protocol != ProtocolName::Greet && !reader.buffer().is_empty();
    if greets_unasked {
        let hint = if reader.buffer().starts_with(b"Welcome") {
            " (its welcome: the server speaks greet; pass --protocol greet)"
        } else {
            ""
        };
        eprintln!(
            "echo-reactor: warning: {peer} spoke before our first message{hint}: \
             printed as its greeting, not as a reply"
        );
    }
    let mut first = true;
    if greets_unasked && args.raw {
        let unasked = reader.buffer().len();
        let greeting = String::from_utf8_lossy(reader.buffer()).into_owned();
        reader.consume(unasked);
        first = false;
        writeln!(stdout, "{greeting}")?;
        stdout.flush()?;
    } else if (args.protocol == ProtocolName::Greet || greets_unasked) && !args.raw {
        let welcome = read_reply_line(&mut reader, &peer).map_err(refused)?;
        first = false;
        writeln!(stdout, "{welcome}")?;
        stdout.flush()?;
    }

    let mut source = Source::new(&args.messages);
    while let Some(message) = source.next()? {
        let mut bytes = message.clone().into_bytes();
        if !args.raw {
            bytes.push(b'\n');
        }
        let sent = writer
            .write_all(&bytes)
            .map_err(|e| action_error(&format!("send to {peer}"), e));
        if first {
            sent.map_err(refused)?;
        } else {
            sent?;
        }
        // `exit` ends the conversation, as in the tutorial client; the greet
        // server answers it by closing, so there is no reply to wait for.
        if message == "exit" && (source.is_interactive() || args.protocol == ProtocolName::Greet) {
            let left = source.left_over();
            if left > 0 {
                eprintln!(
                    "echo-reactor: warning: {left} message{} after `exit` not sent (the server closes on exit)",
                    if left == 1 { "" } else { "s" }
                );
            }
            break;
        }
        let reply = if args.raw {
            read_once(&mut reader, &peer)
        } else {
            read_reply_line(&mut reader, &peer)
        };
        let reply = if first {
            reply.map_err(refused)?
        } else {
            reply?
        };
        first = false;
        writeln!(stdout, "{reply}")?;
        stdout.flush()?;
    }
    Ok(())
}

/// Why the server closed (or reset) the connection before its first reply,
/// when we can tell the likely cause: with a key, it refused our answer;
/// without a PROXY header, it may want one (`serve --proxy-protocol`
/// closes a connection whose first bytes are not a header).
fn first_reply_error(e: io::Error, answered: bool, proxied: bool, peer: &str) -> io::Error {
    // A server that closed with our next message unread answers it with a
    // reset, and a write after that reset fails with a broken pipe: the
    // same close, seen later.
    let closed = matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    );
    if !closed {
        return e;
    }
    if answered {
        return io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{peer}: authentication refused (the server closed the connection after our answer: is it the server's key?)"),
        );
    }
    if proxied {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!(
            "{e} before its first reply: if it runs with --proxy-protocol it expects a PROXY \
             header first (add --proxy-header v1 or v2)"
        ),
    )
}

/// Whether the server sent, unasked and within `wait`, at least a
/// challenge's worth of bytes that are not a greet welcome. What arrived
/// stays in `reader`'s buffer, for the protocol.
fn looks_like_a_challenge(
    reader: &mut BufReader<Conn>,
    wait: Duration,
    reply_timeout: Duration,
) -> io::Result<bool> {
    reader.get_ref().set_read_timeout(Some(wait))?;
    let unasked = match reader.fill_buf() {
        Ok(buf) => buf.len() >= CHALLENGE_BYTES && !buf.starts_with(b"Welcome"),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            false
        }
        // Reset, or whatever else: the first real read reports it.
        Err(_) => false,
    };
    reader.get_ref().set_read_timeout(Some(reply_timeout))?;
    Ok(unasked)
}

/// One reply line, without its line ending.
fn read_reply_line(reader: &mut BufReader<Conn>, peer: &str) -> io::Result<String> {
    let mut line = Vec::new();
    let n = reader
        .read_until(b'\n', &mut line)
        .map_err(|e| action_error(&format!("read from {peer}"), e))?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read from {peer}: the server closed the connection"),
        ));
    }
    let text = String::from_utf8_lossy(&line);
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Whatever one read returns (`--raw`).
fn read_once(reader: &mut BufReader<Conn>, peer: &str) -> io::Result<String> {
    let buf = reader
        .fill_buf()
        .map_err(|e| action_error(&format!("read from {peer}"), e))?;
    if buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read from {peer}: the server closed the connection"),
        ));
    }
    let text = String::from_utf8_lossy(buf).into_owned();
    let n = buf.len();
    reader.consume(n);
    Ok(text)
}

fn run_udp(args: &ClientArgs) -> io::Result<()> {
    let local: SocketAddr = if args.addr.is_ipv6() {
        "[::]:0".parse().expect("valid")
    } else {
        "0.0.0.0:0".parse().expect("valid")
    };
    let socket = UdpSocket::bind(local).map_err(|e| action_error("bind udp", e))?;
    // Connected: the kernel keeps only the server's datagrams for us, and
    // reports an ICMP port unreachable as ECONNREFUSED on the next call
    // (udp(7)) instead of leaving us to wait out the timeout.
    socket
        .connect(args.addr)
        .map_err(|e| action_error(&format!("connect udp {}", args.addr), e))?;
    socket.set_read_timeout(Some(args.timeout.unwrap_or(UDP_REPLY_TIMEOUT)))?;
    let udp_error = |action: &str, e: io::Error| {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            io::Error::new(
                e.kind(),
                format!(
                    "{action} udp {}: connection refused (nothing listens on that port: \
                     the kernel answered with ICMP port unreachable)",
                    args.addr
                ),
            )
        } else {
            action_error(&format!("{action} udp {}", args.addr), e)
        }
    };
    let mut stdout = io::stdout().lock();
    let mut source = Source::new(&args.messages);
    let mut buf = vec![0u8; 65_536];
    while let Some(message) = source.next()? {
        socket
            .send(message.as_bytes())
            .map_err(|e| udp_error("send to", e))?;
        let n = socket
            .recv(&mut buf)
            .map_err(|e| udp_error("read from", e))?;
        writeln!(stdout, "{}", String::from_utf8_lossy(&buf[..n]))?;
        stdout.flush()?;
    }
    Ok(())
}
