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

use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cli::{load_auth_key, ProtocolName};
use crate::protocol::CHALLENGE_BYTES;
use crate::units::parse_addr;

/// How long to wait for a reply before giving up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a UDP reply (datagrams can be lost).
pub const UDP_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// What the server speaks (`greet`: print the welcome line first).
    #[arg(long, value_enum, default_value_t = ProtocolName::Echo)]
    pub protocol: ProtocolName,
    /// Send messages as given (no `\n` added) and print one read's worth per message.
    #[arg(long)]
    pub raw: bool,
    /// Messages to send; none: read them from stdin (with a prompt on a terminal).
    pub messages: Vec<String>,
}

/// A connected stream socket of either kind.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
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
    let key = load_auth_key(args.auth_key_file.as_deref())?;
    if args.udp {
        if key.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--udp cannot do the auth handshake",
            ));
        }
        return run_udp(args);
    }
    let (conn, peer) = match &args.unix {
        Some(path) => {
            let stream = UnixStream::connect(path)
                .map_err(|e| action_error(&format!("connect unix {}", path.display()), e))?;
            stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
            (Conn::Unix(stream), format!("unix {}", path.display()))
        }
        None => {
            let stream = TcpStream::connect(args.addr)
                .map_err(|e| action_error(&format!("connect {}", args.addr), e))?;
            stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
            stream.set_nodelay(true)?;
            (Conn::Tcp(stream), args.addr.to_string())
        }
    };
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut stdout = io::stdout().lock();

    if let Some(key) = key {
        let mut challenge = [0u8; CHALLENGE_BYTES];
        reader
            .read_exact(&mut challenge)
            .map_err(|e| action_error(&format!("read the challenge from {peer}"), e))?;
        writer
            .write_all(&key.answer(&challenge))
            .map_err(|e| action_error(&format!("answer the challenge of {peer}"), e))?;
    }
    if args.protocol == ProtocolName::Greet && !args.raw {
        let welcome = read_reply_line(&mut reader, &peer)?;
        writeln!(stdout, "{welcome}")?;
        stdout.flush()?;
    }

    let mut source = Source::new(&args.messages);
    while let Some(message) = source.next()? {
        let mut bytes = message.clone().into_bytes();
        if !args.raw {
            bytes.push(b'\n');
        }
        writer
            .write_all(&bytes)
            .map_err(|e| action_error(&format!("send to {peer}"), e))?;
        // `exit` ends the conversation, as in the tutorial client; the greet
        // server answers it by closing, so there is no reply to wait for.
        if message == "exit" && (source.is_interactive() || args.protocol == ProtocolName::Greet) {
            break;
        }
        let reply = if args.raw {
            read_once(&mut reader, &peer)?
        } else {
            read_reply_line(&mut reader, &peer)?
        };
        writeln!(stdout, "{reply}")?;
        stdout.flush()?;
    }
    Ok(())
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
    socket.set_read_timeout(Some(UDP_REPLY_TIMEOUT))?;
    let mut stdout = io::stdout().lock();
    let mut source = Source::new(&args.messages);
    let mut buf = vec![0u8; 65_536];
    while let Some(message) = source.next()? {
        socket
            .send_to(message.as_bytes(), args.addr)
            .map_err(|e| action_error(&format!("send to udp {}", args.addr), e))?;
        let n = loop {
            let (n, from) = socket
                .recv_from(&mut buf)
                .map_err(|e| action_error(&format!("read from udp {}", args.addr), e))?;
            if from == args.addr {
                break n;
            }
        };
        writeln!(stdout, "{}", String::from_utf8_lossy(&buf[..n]))?;
        stdout.flush()?;
    }
    Ok(())
}
