//! TLS client configuration for sinks (syslog over TLS, RFC 5425): the receiver's
//! certificate is always verified, against `ca_file` when set, else against the host's trust
//! store; a client certificate is sent when `client_cert` and `client_key` are set. Built
//! once at agent start, so an unreadable or empty file is an error there (naming the key and
//! the file), never a failing delivery later. The crypto provider is ring, passed explicitly
//! (not the process default, which another crate could set to something else).

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{ClientConfig, RootCertStore, crypto::ring};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, ServerName,
    pem::{self, PemObject as _},
};

/// Where a sink's TLS material comes from (the sink's configuration keys).
#[derive(Clone, Debug, Default)]
pub struct TlsFiles<'a> {
    pub ca_file: Option<&'a Path>,
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
}

/// A ready TLS client: its configuration and the name checked in the receiver's certificate.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material: only what identifies the receiver.
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why a TLS client cannot be set up. Messages name the configuration key and the file;
/// they never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {}: cannot read it", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{key} {}: not valid PEM", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{key} {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)", path.display())]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error(
        "client_key {}: no private key in it (expected a PEM PKCS#8, PKCS#1 or SEC1 key)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error("ca_file {}: certificate {index} is not a usable CA certificate", path.display())]
    BadCa {
        path: PathBuf,
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "the host's trust store has no usable CA certificate ({detail}): set ca_file to the \
         CA that signed the receiver's certificate"
    )]
    NoNativeRoots { detail: String },
    #[error("client_cert {} and client_key {} cannot be used together", cert.display(), key.display())]
    ClientAuth {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("server_name {name:?}: neither a DNS name nor an IP address")]
    ServerName { name: String },
    #[error("the TLS protocol versions of the ring provider")]
    Provider(#[source] rustls::Error),
}

/// The TLS client for a receiver: `server_name` is checked in its certificate (an IP address
/// is checked against the certificate's IP addresses).
pub fn client(files: &TlsFiles<'_>, server_name: &str) -> Result<TlsClient, TlsError> {
    let server_name = parse_server_name(server_name)?;
    let roots = match files.ca_file {
        Some(path) => ca_roots(path)?,
        None => native_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_root_certificates(roots);
    let config = match (files.client_cert, files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("client_cert", cert)?;
            let der = private_key(key)?;
            builder
                .with_client_auth_cert(chain, der)
                .map_err(|source| TlsError::ClientAuth {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                    source,
                })?
        }
        // Validation makes sure both or neither are set.
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsClient {
        config: Arc::new(config),
        server_name,
    })
}

/// `name` as checked against certificates: an IP address (brackets of an IPv6 literal
/// allowed) or a DNS name.
pub fn parse_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName {
        name: name.to_owned(),
    })
}

/// The host part of `host:port` (`[v6]:port` without the brackets).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file (other PEM sections, such as a key, are skipped).
fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            key,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("client_key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        source => TlsError::Pem {
            key: "client_key",
            path: path.to_owned(),
            source,
        },
    })
}

/// Only the CAs of `ca_file`.
fn ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in certificates("ca_file", path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            index: index + 1,
            source,
        })?;
    }
    Ok(roots)
}

/// The host's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the distribution's bundle).
/// Unparsable entries are skipped (a distribution bundle may hold a few); none usable is an
/// error, since no receiver could then be verified.
fn native_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 || !found.errors.is_empty() {
        tracing::debug!(
            added,
            ignored,
            errors = found.errors.len(),
            "host trust store: some entries were skipped"
        );
    }
    if roots.is_empty() {
        let detail = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(TlsError::NoNativeRoots { detail });
    }
    Ok(roots)
}

/// Certificates made in tests (rcgen, ring backend): a CA, and server and client
/// certificates it signs.
#[cfg(test)]
pub(crate) mod test_pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    pub struct Ca {
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    /// A certificate and its key, PEM.
    pub struct Leaf {
        pub cert_pem: String,
        pub key_pem: String,
    }

    impl Ca {
        pub fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            Self {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A server certificate for `names` (DNS names or IP addresses).
        pub fn server(&self, names: &[&str]) -> Leaf {
            self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth)
        }

        pub fn client(&self, name: &str) -> Leaf {
            self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
        }

        fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = CertificateParams::new(names.clone()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, names[0].as_str());
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Leaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{test_pki::Ca, *};
    use crate::kernel::loader::error_chain;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("egress-tls-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn file(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_ca_file_and_a_client_certificate_make_a_client() {
        let dir = Dir::new("ok");
        let ca = Ca::new("test CA");
        let client = ca.client("agent.example.org");
        let ca_file = dir.file("ca.pem", &ca.pem);
        // A key in the certificate file is skipped, as in many bundles.
        let cert = dir.file(
            "client.pem",
            &format!("{}{}", client.cert_pem, client.key_pem),
        );
        let key = dir.file("client.key", &client.key_pem);
        let files = TlsFiles {
            ca_file: Some(&ca_file),
            client_cert: Some(&cert),
            client_key: Some(&key),
        };
        let c = client_config_ok(&files, "127.0.0.1");
        assert_eq!(
            c.server_name,
            ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
        );
        assert!(c.config.client_auth_cert_resolver.has_certs());
        let c = client_config_ok(
            &TlsFiles {
                ca_file: Some(&ca_file),
                ..TlsFiles::default()
            },
            "syslog.example.org",
        );
        assert!(!c.config.client_auth_cert_resolver.has_certs());
        assert_eq!(c.server_name.to_str(), "syslog.example.org");
    }

    fn client_config_ok(files: &TlsFiles<'_>, name: &str) -> TlsClient {
        client(files, name).unwrap_or_else(|e| panic!("{}", error_chain(&e)))
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let dir = Dir::new("missing");
        let path = dir.0.join("nowhere.pem");
        let e = client(
            &TlsFiles {
                ca_file: Some(&path),
                ..TlsFiles::default()
            },
            "localhost",
        )
        .unwrap_err();
        let m = error_chain(&e);
        assert!(matches!(e, TlsError::Read { key: "ca_file", .. }), "{m}");
        assert!(
            m.starts_with(&format!("ca_file {}: cannot read it: ", path.display())),
            "{m}"
        );
        assert!(m.contains("No such file"), "{m}");
    }

    #[test]
    fn a_file_without_certificates_is_named() {
        let dir = Dir::new("empty");
        let ca = Ca::new("test CA");
        let leaf = ca.server(&["localhost"]);
        // Only a key where certificates are expected.
        let path = dir.file("ca.pem", &leaf.key_pem);
        let e = client(
            &TlsFiles {
                ca_file: Some(&path),
                ..TlsFiles::default()
            },
            "localhost",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "ca_file {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)",
                path.display()
            )
        );
        let m = error_chain(&e);
        assert!(
            !m.contains("PRIVATE KEY") && !m.contains(&leaf.key_pem[30..60]),
            "{m}"
        );

        let text = dir.file("notes.txt", "not PEM at all\n");
        let e = client(
            &TlsFiles {
                ca_file: Some(&text),
                ..TlsFiles::default()
            },
            "localhost",
        )
        .unwrap_err();
        assert!(
            matches!(e, TlsError::NoCertificate { key: "ca_file", .. }),
            "{e}"
        );
    }

    #[test]
    fn client_key_problems_are_named() {
        let dir = Dir::new("keys");
        let ca = Ca::new("test CA");
        let ca_file = dir.file("ca.pem", &ca.pem);
        let one = ca.client("one");
        let other = ca.client("other");
        let cert = dir.file("client.pem", &one.cert_pem);
        let no_key = dir.file("cert-as-key.pem", &one.cert_pem);
        let wrong_key = dir.file("other.key", &other.key_pem);
        let missing = dir.0.join("missing.key");
        let try_key = |key: &Path| {
            client(
                &TlsFiles {
                    ca_file: Some(&ca_file),
                    client_cert: Some(&cert),
                    client_key: Some(key),
                },
                "localhost",
            )
            .unwrap_err()
        };
        let e = try_key(&no_key);
        assert_eq!(
            e.to_string(),
            format!(
                "client_key {}: no private key in it (expected a PEM PKCS#8, PKCS#1 or SEC1 key)",
                no_key.display()
            )
        );
        let e = try_key(&missing);
        assert!(
            matches!(
                e,
                TlsError::Read {
                    key: "client_key",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("missing.key"), "{e}");
        let e = try_key(&wrong_key);
        let m = error_chain(&e);
        assert!(matches!(e, TlsError::ClientAuth { .. }), "{m}");
        assert!(m.contains("client.pem") && m.contains("other.key"), "{m}");
        assert!(!m.contains(&other.key_pem[30..60]), "no key material: {m}");
    }

    #[test]
    fn server_names_and_hosts() {
        assert_eq!(host_of("syslog.example.org:6514"), "syslog.example.org");
        assert_eq!(host_of("127.0.0.1:6514"), "127.0.0.1");
        assert_eq!(host_of("[::1]:6514"), "::1");
        assert!(matches!(
            parse_server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            parse_server_name("::1").unwrap(),
            ServerName::IpAddress(_)
        ));
        let e = parse_server_name("bad name!").unwrap_err();
        assert_eq!(
            e.to_string(),
            "server_name \"bad name!\": neither a DNS name nor an IP address"
        );
    }
}
