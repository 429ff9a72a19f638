//! A minimal Matrix client-server API client over plain HTTP to loopback: shared-secret
//! registration (admin API), rooms, messages, media upload and authenticated download.

use std::{
    io,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};
use ureq::Agent;

/// A blocking HTTP agent that never uses a proxy from the environment (all traffic is to
/// loopback) and reports HTTP errors as statuses, not transport errors.
pub fn agent() -> Agent {
    Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// The `mac` of `POST /_synapse/admin/v1/register`: HMAC-SHA1 keyed by the shared secret over
/// `nonce NUL user NUL password NUL ("admin" | "notadmin")`, in lower-case hex.
pub fn registration_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    for (i, part) in [
        nonce,
        user,
        password,
        if admin { "admin" } else { "notadmin" },
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Percent-encodes one path segment (room ids `!x:server`, event types, transaction ids):
/// everything but RFC 3986's unreserved characters.
pub fn encode_segment(s: &str) -> String {
    use std::fmt::Write as _;

    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `mxc://server/media_id` -> `(server, media_id)`.
pub fn parse_mxc(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("mxc://")?;
    let (server, id) = rest.split_once('/')?;
    (!server.is_empty() && !id.is_empty() && !id.contains('/')).then_some((server, id))
}

/// The authenticated media download path for an `mxc://` URI.
pub fn download_path(mxc: &str) -> Option<String> {
    let (server, id) = parse_mxc(mxc)?;
    Some(format!(
        "/_matrix/client/v1/media/download/{}/{}",
        encode_segment(server),
        encode_segment(id)
    ))
}

/// Registers `user` through the shared-secret admin API at `base` (Synapse itself: the
/// admin API is not behind the proxy). Returns the access token.
pub fn register(
    agent: &Agent,
    base: &str,
    secret: &str,
    user: &str,
    password: &str,
) -> Result<String> {
    let url = format!("{base}/_synapse/admin/v1/register");
    let nonce = json_ok(agent.get(&url).call(), &url)?["nonce"]
        .as_str()
        .context("no nonce")?
        .to_owned();
    let body = json!({
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": false,
        "mac": registration_mac(secret, &nonce, user, password, false),
    });
    let v = json_ok(send_json(agent.post(&url), &body), &url)?;
    v["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token")
}

/// Password login (`POST /_matrix/client/v3/login`) as a client does it; returns the
/// access token of the new device.
pub fn login(agent: &Agent, base: &str, user: &str, password: &str) -> Result<String> {
    let url = format!("{base}/_matrix/client/v3/login");
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    });
    json_ok(send_json(agent.post(&url), &body), &url)?["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token")
}

/// The thumbnail path (authenticated media API) for an `mxc://` URI, scaled into `w`x`h`.
pub fn thumbnail_path(mxc: &str, w: u32, h: u32) -> Option<String> {
    let (server, id) = parse_mxc(mxc)?;
    Some(format!(
        "/_matrix/client/v1/media/thumbnail/{}/{}?width={w}&height={h}&method=scale",
        encode_segment(server),
        encode_segment(id)
    ))
}

/// Sends `body` as JSON (ureq's own `json` feature is off in the workspace).
fn send_json(
    req: ureq::RequestBuilder<ureq::typestate::WithBody>,
    body: &Value,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    req.header("Content-Type", "application/json")
        .send(&serde_json::to_vec(body).unwrap_or_default()[..])
}

/// Reads a JSON answer, failing with the status and the answer's text on anything but 2xx.
fn json_ok(res: Result<ureq::http::Response<ureq::Body>, ureq::Error>, url: &str) -> Result<Value> {
    let mut res = res.with_context(|| format!("requesting {url}"))?;
    let status = res.status();
    let text = res
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        bail!(
            "{url}: HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        );
    }
    serde_json::from_str(&text).with_context(|| format!("{url}: not JSON"))
}

/// One logged-in user talking to the homeserver through `base` (the proxy).
pub struct Session {
    agent: Agent,
    base: String,
    token: String,
    txn: u64,
}

impl Session {
    pub fn new(base: &str, token: String) -> Self {
        Self::with_agent(agent(), base, token)
    }

    /// A session over a given HTTP agent (a simulated host's own source address).
    pub fn with_agent(agent: Agent, base: &str, token: String) -> Self {
        Self {
            agent,
            base: base.to_owned(),
            token,
            txn: 0,
        }
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// An authenticated GET; the answer whatever its status (the caller reads the body).
    fn get(&self, url: &str) -> Result<ureq::http::Response<ureq::Body>> {
        self.agent
            .get(url)
            .header("Authorization", self.auth())
            .call()
            .with_context(|| format!("requesting {url}"))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        json_ok(
            send_json(
                self.agent.post(&url).header("Authorization", self.auth()),
                body,
            ),
            &url,
        )
    }

    /// Creates a public room; returns its id.
    pub fn create_public_room(&self, name: &str) -> Result<String> {
        let v = self.post(
            "/_matrix/client/v3/createRoom",
            &json!({"preset": "public_chat", "visibility": "public", "name": name}),
        )?;
        v["room_id"]
            .as_str()
            .map(str::to_owned)
            .context("no room_id")
    }

    pub fn join(&self, room: &str) -> Result<()> {
        self.post(
            &format!("/_matrix/client/v3/join/{}", encode_segment(room)),
            &json!({}),
        )
        .map(drop)
    }

    /// Sends an `m.room.message` event; returns its event id.
    pub fn send_message(&mut self, room: &str, content: &Value) -> Result<String> {
        self.txn += 1;
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/e2e-{}",
            encode_segment(room),
            self.txn
        );
        let url = format!("{}{path}", self.base);
        let v = json_ok(
            send_json(
                self.agent.put(&url).header("Authorization", self.auth()),
                content,
            ),
            &url,
        )?;
        v["event_id"]
            .as_str()
            .map(str::to_owned)
            .context("no event_id")
    }

    /// Uploads `bytes`; returns the `mxc://` URI.
    pub fn upload(&self, name: &str, mime: &str, bytes: &[u8]) -> Result<String> {
        let url = format!(
            "{}/_matrix/media/v3/upload?filename={}",
            self.base,
            encode_segment(name)
        );
        let v = json_ok(
            self.agent
                .post(&url)
                .header("Authorization", self.auth())
                .header("Content-Type", mime)
                .send(bytes),
            &url,
        )?;
        v["content_uri"]
            .as_str()
            .map(str::to_owned)
            .context("no content_uri")
    }

    /// One page of `/messages`, newest first, from `from` (None: the end of the room).
    /// Returns the answer and its size in bytes.
    pub fn messages_page(
        &self,
        room: &str,
        from: Option<&str>,
        limit: u32,
    ) -> Result<(Value, u64)> {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}",
            encode_segment(room)
        );
        if let Some(f) = from {
            path.push_str("&from=");
            path.push_str(&encode_segment(f));
        }
        self.get_json(&format!("{}{path}", self.base))
    }

    /// The whole history of `room`, paged backwards from its end with pages of `page`
    /// events, within `deadline` from `started`.
    pub fn whole_history(
        &self,
        room: &str,
        page: u32,
        started: Instant,
        deadline: Duration,
    ) -> Result<History> {
        let mut h = History::default();
        let mut from: Option<String> = None;
        loop {
            anyhow::ensure!(
                started.elapsed() < deadline,
                "history not read in {deadline:?} ({} pages so far)",
                h.pages
            );
            let (answer, bytes) = self.messages_page(room, from.as_deref(), page)?;
            h.pages += 1;
            h.bytes += bytes;
            let chunk = answer["chunk"].as_array().cloned().unwrap_or_default();
            let done = chunk.is_empty();
            h.events.extend(chunk);
            match answer["end"].as_str() {
                Some(end) if !done => from = Some(end.to_owned()),
                _ => return Ok(h),
            }
        }
    }

    /// `/sync`: the initial one without `since`, then incremental, waiting up to
    /// `timeout_ms` for news. Returns the answer and its size.
    pub fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Result<(Value, u64)> {
        let mut url = format!("{}/_matrix/client/v3/sync?timeout={timeout_ms}", self.base);
        if let Some(s) = since {
            url.push_str("&since=");
            url.push_str(&encode_segment(s));
        }
        self.get_json(&url)
    }

    /// GET `url` (authenticated), expecting JSON: the answer and its size in bytes.
    fn get_json(&self, url: &str) -> Result<(Value, u64)> {
        let mut res = self.get(url)?;
        let status = res.status();
        let body = res
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()?;
        if !status.is_success() {
            bail!(
                "{url}: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok((serde_json::from_slice(&body)?, body.len() as u64))
    }

    /// Fetches one thumbnail; returns its size in bytes.
    pub fn thumbnail(&self, mxc: &str, w: u32, h: u32) -> Result<u64> {
        let path = thumbnail_path(mxc, w, h).with_context(|| format!("not an mxc URI: {mxc}"))?;
        self.fetch(&path)
    }

    /// Downloads one media file (authenticated media API) and returns its size in bytes.
    pub fn download(&self, mxc: &str) -> Result<u64> {
        let path = download_path(mxc).with_context(|| format!("not an mxc URI: {mxc}"))?;
        self.fetch(&path)
    }

    /// GETs `path` and reads the answer to the end; returns its size.
    fn fetch(&self, path: &str) -> Result<u64> {
        let url = format!("{}{path}", self.base);
        let mut res = self.get(&url)?;
        if !res.status().is_success() {
            bail!("{url}: HTTP {}", res.status());
        }
        io::copy(&mut res.body_mut().as_reader(), &mut io::sink())
            .with_context(|| format!("reading {url}"))
    }
}

/// A room's events as `/messages` served them, newest first.
#[derive(Debug, Default)]
pub struct History {
    pub pages: usize,
    /// Bytes of the answers' bodies.
    pub bytes: u64,
    pub events: Vec<Value>,
}

impl History {
    /// The `mxc://` URIs of the room's images.
    pub fn images(&self) -> Vec<String> {
        self.messages("m.image")
            .filter_map(|ev| ev["content"]["url"].as_str().map(str::to_owned))
            .collect()
    }

    /// The `m.room.message` events of one `msgtype`.
    pub fn messages<'a>(&'a self, msgtype: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events
            .iter()
            .filter(move |ev| ev["type"] == "m.room.message" && ev["content"]["msgtype"] == msgtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_mac_matches_pythons_hmac() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"s3cr3t:key",
        //   b"abcnonce\0alice\0p4ss\0notadmin", hashlib.sha1).hexdigest())'
        assert_eq!(
            registration_mac("s3cr3t:key", "abcnonce", "alice", "p4ss", false),
            "9f74d4d7f69c2a315c7b51a2c36382cc5d472cbb"
        );
        assert_eq!(
            registration_mac("s3cr3t:key", "abcnonce", "root", "pw", true),
            "335f52bc277203e254835c55f13632f278b99849"
        );
    }

    #[test]
    fn hmac_sha1_rfc2202_case_1() {
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&[0x0b; 20]).unwrap();
        mac.update(b"Hi There");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(encode_segment("!abc:e2e.test"), "%21abc%3Ae2e.test");
        assert_eq!(encode_segment("t47-12_3.x~"), "t47-12_3.x~");
        assert_eq!(encode_segment("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(
            parse_mxc("mxc://e2e.test/AbC123"),
            Some(("e2e.test", "AbC123"))
        );
        assert_eq!(parse_mxc("mxc://e2e.test/"), None);
        assert_eq!(parse_mxc("mxc:///x"), None);
        assert_eq!(parse_mxc("http://e2e.test/x"), None);
        assert_eq!(parse_mxc("mxc://a/b/c"), None);
        assert_eq!(
            download_path("mxc://e2e.test/AbC123").as_deref(),
            Some("/_matrix/client/v1/media/download/e2e.test/AbC123")
        );
        assert_eq!(
            thumbnail_path("mxc://e2e.test/Ab:C", 320, 240).as_deref(),
            Some(
                "/_matrix/client/v1/media/thumbnail/e2e.test/Ab%3AC?width=320&height=240&method=scale"
            )
        );
        assert_eq!(thumbnail_path("nope", 1, 1), None);
    }
}
