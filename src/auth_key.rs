//! Where the handshake key comes from: a file (`--auth-key-file`), or else
//! the environment ([`AUTH_KEY_ENV`]).
//!
//! `serve` and `client` load the key the same way, and `bench` keeps the
//! variable away from the server it starts, so it lives below all three.
//! Loading is all this file does; the handshake itself is
//! [`AuthKey`]'s.

use std::io;
use std::path::Path;

use crate::protocol::AuthKey;

/// The environment variable that may hold the handshake key itself.
pub const AUTH_KEY_ENV: &str = "ECHO_REACTOR_AUTH_KEY";

/// The handshake key: the bytes of `file` (one trailing `\n` stripped), or
/// else [`AUTH_KEY_ENV`] if set; `None` if neither is given. An unusable
/// key (empty) is refused naming where it came from.
pub fn load_auth_key(file: Option<&Path>) -> io::Result<Option<AuthKey>> {
    // Where the key came from, so a bad one is named by its source.
    let source;
    let bytes = match file {
        Some(path) => {
            source = format!("auth key file {}", path.display());
            let mut bytes = std::fs::read(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("read auth key file {}: {e}", path.display()),
                )
            })?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            bytes
        }
        None => match std::env::var_os(AUTH_KEY_ENV) {
            Some(value) => {
                source = format!("{AUTH_KEY_ENV} (set in the environment)");
                value.into_encoded_bytes()
            }
            None => return Ok(None),
        },
    };
    AuthKey::new(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{source}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_key_file_loses_one_trailing_newline_and_an_unreadable_one_is_named() {
        let path = std::env::temp_dir().join(format!("echo-reactor-key-{}", std::process::id()));
        std::fs::write(&path, b"sesame\n").unwrap();
        let key = load_auth_key(Some(&path)).unwrap().unwrap();
        assert_eq!(
            key.answer(b"c"),
            AuthKey::new(b"sesame").unwrap().answer(b"c")
        );
        std::fs::remove_file(&path).unwrap();
        let err = load_auth_key(Some(&path)).unwrap_err();
        assert!(err.to_string().starts_with("read auth key file "), "{err}");
    }
}
