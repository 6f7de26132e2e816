//! The values every command line flag is made of: socket addresses, byte
//! sizes and durations, parsed the same way for `serve`, `client` and
//! `bench`.
//!
//! This module sits below [`serve`](crate::serve), [`client`](crate::client) and
//! [`bench`](mod@crate::bench) and uses none of them. Each parser returns
//! `Err(String)` with one sentence saying what is wrong and what would be
//! right; clap puts it after `invalid value '…' for '--flag'` and exits 2.
//!
//! The rules, documented once in README ("Values on the command line"):
//!
//! - **Addresses** are `IP:PORT`, IPv6 in brackets (`[::1]:8888`). Host
//!   names are *not* resolved: `localhost` alone is two addresses
//!   (`127.0.0.1` and `::1`), and silently picking one is a guess.
//! - **Sizes** are a number, fractions allowed, then an optional unit:
//!   `B`; binary `KiB`/`MiB`/`GiB`/`TiB`/`PiB` (and `K`/`M`/`G`/`T`/`P`,
//!   binary as in nginx and `sort -S`); decimal `kB`/`MB`/`GB`/`TB`/`PB`
//!   (powers of 1000, exactly). Units are
//!   case-insensitive. A size must come out a whole number of bytes.
//! - **Durations** are seconds, fractions allowed, with an optional `s` or
//!   `ms` suffix (`0.5`, `0.5s` and `500ms` are the same), at least
//!   [`MIN_TIMER`] unless the flag allows `0`.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A command line that cannot work, found after clap has parsed it (flags
/// that contradict each other or the machine). The binary exits 2 for it,
/// as clap does for a bad flag value; every other error exits 1.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An [`io::Error`] carrying a [`UsageError`]: one line, naming the flag.
pub fn usage_error(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, UsageError(message.into()))
}

/// Whether `error` is a [`usage_error`] (exit code 2).
pub fn is_usage_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<UsageError>())
}

/// The shortest timer a flag may ask for. The reactor counts whole
/// milliseconds, so anything shorter would be rounded: `1e-10` to zero (a
/// stats line every turn, a busy loop; every connection idle at once).
pub const MIN_TIMER: Duration = Duration::from_millis(1);

/// Parse `IP:PORT` (`127.0.0.1:8888`, `[::1]:8888`), saying what is wrong
/// when it is not one: a missing port, a port out of range, an IPv6
/// address without brackets, or a host name (not resolved).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if text.is_empty() {
        return Err("empty address (try 127.0.0.1:8888)".into());
    }
    // More than one colon outside brackets: an IPv6 address and a port
    // cannot be told apart (`::1:8888` could be `::1` port 8888 or `::1:8888`).
    if !text.starts_with('[') && text.matches(':').count() > 1 {
        let example = text
            .rsplit_once(':')
            .and_then(|(ip, port)| Some((ip.parse::<IpAddr>().ok()?, port)))
            .map_or("[::1]:8888".to_string(), |(ip, port)| {
                format!("[{ip}]:{port}")
            });
        return Err(format!(
            "an IPv6 address needs brackets before the port (try {example})"
        ));
    }
    // A bare IP: the port is what is missing.
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let example = SocketAddr::new(ip, 8888);
        return Err(format!("the port is missing (try {example})"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "not an address: expected IP:PORT (try 127.0.0.1:{})",
            if text.chars().all(|c| c.is_ascii_digit()) {
                text
            } else {
                "8888"
            }
        ));
    };
    if host.is_empty() {
        return Err(format!(
            "the IP address is missing before ':{port}' (try 127.0.0.1:{port}, or 0.0.0.0:{port} for every interface)"
        ));
    }
    let port_ok = match port.parse::<u64>() {
        Ok(p) if p <= u64::from(u16::MAX) => true,
        Ok(_) => return Err(format!("port {port} is out of range (0 to 65535)")),
        Err(_) => false,
    };
    if !port_ok {
        return Err(format!("'{port}' is not a port number (0 to 65535)"));
    }
    let host_ip = host.trim_start_matches('[').trim_end_matches(']');
    if host_ip.parse::<IpAddr>().is_err() {
        return Err(format!(
            "'{host}' is not an IP address; host names are not resolved (try 127.0.0.1:{port} or [::1]:{port})"
        ));
    }
    Err("not an address: expected IP:PORT, e.g. 127.0.0.1:8888 or [::1]:8888".to_string())
}

/// Parse a byte size (see the module header for the units); zero is refused.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    match parse_size(text)? {
        0 => Err("must be at least 1 byte".to_string()),
        bytes => Ok(bytes),
    }
}

/// [`parse_bytes`], but `0` is allowed (flags where it means "no limit").
pub fn parse_bytes_or_zero(text: &str) -> Result<usize, String> {
    parse_size(text)
}

/// A size in bytes, zero included.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "p" | "pib" => 1 << 50,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit '{other}' (use B, KiB, MiB, GiB, TiB, PiB, or decimal kB, MB, GB, TB, PB)"
            ))
        }
    };
    let not_a_size = || format!("'{text}' is not a size (try 65536, 64KiB or 1.5MiB)");
    // Exact arithmetic: "1.5MiB" is 15 * 2^20 / 10, never a float's rounding.
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(not_a_size());
    }
    let digits = format!("{whole}{fraction}");
    if digits.len() > 30 {
        return Err(format!("'{text}' is too large"));
    }
    let mantissa: u128 = digits.parse().map_err(|_| not_a_size())?;
    let divisor = 10u128.pow(fraction.len() as u32);
    let scaled = mantissa * scale;
    if !scaled.is_multiple_of(divisor) {
        return Err(format!("'{text}' is not a whole number of bytes"));
    }
    usize::try_from(scaled / divisor).map_err(|_| format!("'{text}' is too large"))
}

/// Parse a duration (see the module header); at least [`MIN_TIMER`].
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let (number, per_second) = if let Some(ms) = trimmed.strip_suffix("ms") {
        (ms, 1000.0)
    } else {
        (trimmed.strip_suffix('s').unwrap_or(trimmed), 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 5, 0.5 or 500ms)"))?;
    if value.is_nan() || value <= 0.0 || !value.is_finite() {
        return Err(format!("'{text}': must be a positive duration"));
    }
    let duration = Duration::try_from_secs_f64(value / per_second)
        .map_err(|_| format!("'{text}' is too long"))?;
    if duration < MIN_TIMER {
        return Err(format!(
            "'{text}': must be at least 0.001 seconds (1 ms, the timers' resolution)"
        ));
    }
    Ok(duration)
}

/// Like [`parse_secs`], but `0` is allowed and means "no time at all"
/// (`--shutdown-grace 0`: close every connection at once).
pub fn parse_secs_or_zero(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let number = trimmed
        .strip_suffix("ms")
        .or_else(|| trimmed.strip_suffix('s'))
        .unwrap_or(trimmed);
    if number.trim().parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    parse_secs(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        parse_addr(text).expect_err(text)
    }

    #[test]
    fn addresses_say_what_is_wrong_with_them() {
        assert_eq!(
            parse_addr("127.0.0.1:8888"),
            Ok(([127, 0, 0, 1], 8888).into())
        );
        assert_eq!(parse_addr("[::1]:0").unwrap().port(), 0);
        assert!(refusal("::1:8888").contains("IPv6 address needs brackets"));
        assert!(refusal("::1:8888").contains("[::1]:8888"));
        assert!(refusal("[::1]").contains("port is missing (try [::1]:8888)"));
        assert!(refusal("127.0.0.1").contains("port is missing (try 127.0.0.1:8888)"));
        assert!(refusal(":8888").contains("IP address is missing"));
        assert!(refusal("127.0.0.1:99999").contains("port 99999 is out of range"));
        assert!(refusal("127.0.0.1:http").contains("not a port number"));
        assert!(refusal("localhost:8888").contains("host names are not resolved"));
        assert!(refusal("localhost").contains("expected IP:PORT"));
        assert!(refusal("").contains("empty"));
    }

    #[test]
    fn sizes_take_binary_and_exact_decimal_units_and_fractions() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_bytes("64kib"), Ok(64 * 1024));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("2m"), Ok(2 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5MiB"), Ok(3 << 19));
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert_eq!(parse_bytes("64kB"), Ok(64_000));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("0.5KB"), Ok(500));
        assert_eq!(parse_bytes("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_bytes("1TiB"), Ok(1 << 40));
        assert_eq!(parse_bytes("2t"), Ok(2 << 40));
        assert_eq!(parse_bytes("1PB"), Ok(1_000_000_000_000_000));
        assert_eq!(parse_bytes("100 B"), Ok(100));
        assert!(parse_bytes("1.1KiB")
            .unwrap_err()
            .contains("whole number of bytes"));
        assert!(parse_bytes("0").is_err());
        assert_eq!(parse_bytes_or_zero("0"), Ok(0));
        assert_eq!(parse_bytes_or_zero("0MiB"), Ok(0));
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes(".").is_err());
        assert!(parse_bytes("1.2.3").is_err());
        assert!(parse_bytes("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_bytes("99999999999999999999G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_bytes(&"9".repeat(60))
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations_take_fractions_and_an_optional_unit() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_secs("0.5ms").unwrap_err().contains("at least 0.001"));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-3").is_err());
        assert!(parse_secs("NaN").is_err());
        assert!(parse_secs("soon").is_err());
        assert!(
            parse_secs("5m").is_err(),
            "minutes are not a unit: 5m is refused"
        );
        assert_eq!(parse_secs_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(parse_secs_or_zero("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_secs_or_zero("0.0"), Ok(Duration::ZERO));
        assert_eq!(parse_secs_or_zero("2"), Ok(Duration::from_secs(2)));
        assert!(parse_secs_or_zero("1e-10").is_err());
        assert!(parse_secs_or_zero("-0.5").is_err());
    }

    #[test]
    fn durations_below_the_timers_resolution_are_refused_naming_the_minimum() {
        assert_eq!(parse_secs("0.001"), Ok(MIN_TIMER));
        assert_eq!(parse_secs("1ms"), Ok(MIN_TIMER));
        for tiny in ["1e-10", "0.0009", "5e-324"] {
            let err = parse_secs(tiny).unwrap_err();
            assert!(
                err.contains("at least 0.001 seconds (1 ms"),
                "{tiny}: {err}"
            );
        }
    }
}
