//! What an HTTP sink reads at start, so that a missing or unreadable file is an error when
//! the agent starts (naming the key and the file), not at the first alert: the token
//! (`token_file` / `token_env`, kept in a `Secret` that never prints) and the TLS material
//! (`ca_file`, `client_cert`, `client_key`).

use std::{
    fmt, io,
    path::{Path, PathBuf},
};

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use super::{http::redacted, settings::SinkConfig};

/// A token: its value goes into a request header and nowhere else (`Debug` and `Display`
/// print a placeholder).
pub struct Secret(String);

impl Secret {
    pub const fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why an HTTP sink cannot start; each names its key (the sink's name is added around it).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("token_file {}", .0.display())]
    TokenFile(PathBuf, #[source] io::Error),
    #[error("token_file {} is empty", .0.display())]
    TokenFileEmpty(PathBuf),
    #[error("token_env {0}: the environment variable is not set or empty")]
    TokenEnv(String),
    #[error("token_file or token_env is needed")]
    NoToken,
    #[error("auth = \"basic\" needs a token of the form user:password")]
    BasicToken,
    #[error("{key} {}", .path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("url {0}")]
    Url(String),
}

/// The token of a sink, from `token_file` or `token_env` (looked up with `env`, so tests
/// need not change the process environment). `None` when neither is set.
pub fn load_token(
    c: &SinkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, SetupError> {
    if let Some(path) = &c.token_file {
        let path = path.get_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| SetupError::TokenFile(path.clone(), e))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(SetupError::TokenFileEmpty(path.clone()));
        }
        return Ok(Some(Secret::new(token.to_owned())));
    }
    if let Some(name) = &c.token_env {
        let name = name.get_ref();
        let token = env(name).map(|v| v.trim().to_owned()).unwrap_or_default();
        if token.is_empty() {
            return Err(SetupError::TokenEnv(name.clone()));
        }
        return Ok(Some(Secret::new(token)));
    }
    Ok(None)
}

/// A token over plain `http://` can be read on the way: said once, at start.
pub fn warn_if_plain(c: &SinkConfig, url: &str) {
    if url.starts_with("http://") && (c.token_file.is_some() || c.token_env.is_some()) {
        tracing::warn!(
            sink = %c.name.get_ref(),
            url = %redacted(url),
            "this alert sink sends its token over plain http; use https"
        );
    }
}

/// Verification always on: against the certificates of `ca_file` alone when set (a private
/// CA), else the host's trust store; the client certificate when configured.
pub fn tls_config(c: &SinkConfig) -> Result<TlsConfig, SetupError> {
    let mut tls = TlsConfig::builder().root_certs(RootCerts::PlatformVerifier);
    if let Some(ca) = &c.ca_file {
        let certs = certificates("ca_file", ca.get_ref())?;
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    if let (Some(cert), Some(key)) = (&c.client_cert, &c.client_key) {
        let chain = certificates("client_cert", cert.get_ref())?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(
            &chain,
            private_key(key.get_ref())?,
        )));
    }
    Ok(tls.build())
}

fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::Pem {
        key,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(key: &'static str, path: &Path, what: String) -> SetupError {
    SetupError::Pem {
        key,
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, what),
    }
}

/// Every certificate in a PEM file (at least one).
fn certificates(key: &'static str, path: &Path) -> Result<Vec<Certificate<'static>>, SetupError> {
    let pem = read_pem(key, path)?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(pem_error(key, path, e.to_string())),
        }
    }
    if certs.is_empty() {
        return Err(pem_error(key, path, "no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKey<'static>, SetupError> {
    let pem = read_pem("client_key", path)?;
    PrivateKey::from_pem(&pem)
        .map_err(|_| pem_error("client_key", path, "no PEM private key in it".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Origin};

    fn sink(extra: &str) -> SinkConfig {
        Config::parse(
            &format!("[[sinks]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://h/x\"\n{extra}"),
            &Origin::Embedded,
        )
        .unwrap()
        .sinks
        .remove(0)
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s} {s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn tokens_from_a_file_or_the_environment_and_clear_errors() {
        let dir = std::env::temp_dir().join(format!("egress-http-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  abc-123\n").unwrap();
        let c = sink(&format!("token_file = {:?}\n", file.display().to_string()));
        let t = load_token(&c, |_| None).unwrap().unwrap();
        assert_eq!(t.expose(), "abc-123", "trimmed");

        std::fs::write(&file, "\n").unwrap();
        let e = load_token(&c, |_| None).unwrap_err().to_string();
        assert!(e.contains("token_file") && e.contains("is empty"), "{e}");
        std::fs::remove_file(&file).unwrap();
        let e = load_token(&c, |_| None).unwrap_err();
        assert!(
            e.to_string().starts_with("token_file ") && e.to_string().contains("token"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some(), "the io error");

        let c = sink("token_env = \"HOOK_TOKEN\"\n");
        let env = |name: &str| (name == "HOOK_TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(load_token(&c, env).unwrap().unwrap().expose(), "s3cret");
        let e = load_token(&c, |_| Some(String::new()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("token_env HOOK_TOKEN"), "{e}");
        assert!(load_token(&sink(""), |_| None).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_certificates_fail_at_start_naming_the_key() {
        let c = sink("ca_file = \"/nonexistent/ca.pem\"\n");
        let e = tls_config(&c).err().unwrap().to_string();
        assert_eq!(e, "ca_file /nonexistent/ca.pem");
        let dir = std::env::temp_dir().join(format!("egress-http-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here").unwrap();
        let c = sink(&format!("ca_file = {:?}\n", empty.display().to_string()));
        let e = tls_config(&c).err().unwrap();
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(source.contains("no PEM certificate"), "{source}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
