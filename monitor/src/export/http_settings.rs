//! Checks of the HTTP sink keys (`splunk_hec`, `elasticsearch`, `webhook`) at config load:
//! what can be wrong without reading a file or the environment. Token and certificate files
//! are read when the agent starts (`http::HttpClient::new`).

use std::time::Duration;

use super::{
    Format, http,
    settings::{Invalid, SinkConfig, SinkType},
};

pub fn validate(i: usize, sink: &SinkConfig) -> Result<(), Invalid> {
    let err = |span: std::ops::Range<usize>, key: &str, message: String| {
        Err((span, format!("sinks[{i}].{key}"), message))
    };
    let Some(url) = &sink.url else {
        return err(
            sink.name.span(),
            "url",
            "an HTTP sink needs a url (https://host:port...)".into(),
        );
    };
    if let Err(message) = http::check_url(url.get_ref()) {
        return err(url.span(), "url", message);
    }
    if sink.kind != SinkType::Webhook && url.get_ref().contains(['?', '#']) {
        return err(
            url.span(),
            "url",
            "no query here: the sink adds its own path and parameters".into(),
        );
    }
    match (&sink.token_file, &sink.token_env) {
        (Some(_), Some(env)) => {
            return err(
                env.span(),
                "token_env",
                "token_file and token_env exclude each other".into(),
            );
        }
        (None, None) if sink.kind != SinkType::Webhook => {
            return err(
                sink.name.span(),
                "token_file",
                "this sink needs a token: token_file or token_env".into(),
            );
        }
        (_, Some(env)) if env.get_ref().is_empty() || env.get_ref().contains('=') => {
            return err(
                env.span(),
                "token_env",
                "an environment variable name".into(),
            );
        }
        _ => {}
    }
    let timeout = sink.timeout.get_ref().0;
    if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&timeout) {
        return err(sink.timeout.span(), "timeout", "100ms to 5m".into());
    }
    if let Some(auth) = &sink.auth
        && sink.kind != SinkType::Elasticsearch
    {
        return err(
            sink.name.span(),
            "auth",
            format!("auth = {auth:?} is for elasticsearch sinks"),
        );
    }
    if sink.kind == SinkType::Elasticsearch {
        validate_elasticsearch(i, sink)?;
    }
    Ok(())
}

/// `_bulk` into a data stream: every document needs `@timestamp`, which ECS has and the
/// OCSF finding gets added; the agent's own JSON, CEF and text have no place for it.
fn validate_elasticsearch(i: usize, sink: &SinkConfig) -> Result<(), Invalid> {
    if !matches!(sink.format, Format::Ecs | Format::Ocsf) {
        return Err((
            sink.name.span(),
            format!("sinks[{i}].format"),
            "an elasticsearch sink sends documents with @timestamp: format = \"ecs\" (or \
             \"ocsf\")"
                .into(),
        ));
    }
    if let Some(ds) = &sink.data_stream
        && let Err(message) = check_data_stream(ds.get_ref())
    {
        return Err((ds.span(), format!("sinks[{i}].data_stream"), message));
    }
    Ok(())
}

/// Elasticsearch's index name rules (data streams follow them): lowercase, none of
/// `\ / * ? " < > | , # :` or space, not starting with `-`, `_` or `+`, at most 255 bytes.
fn check_data_stream(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.starts_with(['-', '_', '+'])
        || name
            .chars()
            .any(|c| c.is_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(c));
    if bad {
        return Err(format!(
            "{name:?} is not a data stream name (lowercase, no spaces or \\/*?\"<>|,#:, not \
             starting with -, _ or +)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Origin};

    fn error(text: &str) -> String {
        Config::parse(text, &Origin::Embedded)
            .map(|_| ())
            .expect_err(text)
            .to_string()
    }

    const HEC: &str = "[[sinks]]\nname = \"s\"\ntype = \"splunk_hec\"\n";

    #[test]
    fn http_sinks_parse_with_their_keys() {
        let c = Config::parse(
            "[[sinks]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nurl = \"https://hec.example.org:8088\"\ntoken_file = \"/etc/egress-monitor/hec.token\"\nformat = \"ocsf\"\nindex = \"security\"\ntimeout = \"3s\"\ngzip = false\n\
             [[sinks]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"https://es.example.org:9200\"\ntoken_env = \"ES_API_KEY\"\nformat = \"ecs\"\nauth = \"basic\"\ndata_stream = \"logs-egress_monitor.alerts-prod\"\n\
             [[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9000/alerts?team=net\"\n",
            &Origin::Embedded,
        )
        .unwrap();
        assert_eq!(c.sinks[0].index.as_deref(), Some("security"));
        assert_eq!(c.sinks[0].timeout.get_ref().0.as_secs(), 3);
        assert_eq!(c.sinks[0].gzip, Some(false));
        assert_eq!(
            c.sinks[1].auth,
            Some(crate::export::settings::HttpAuth::Basic)
        );
        assert!(c.sinks[2].token_file.is_none() && c.sinks[2].token_env.is_none());
    }

    #[test]
    fn http_sink_mistakes_are_named() {
        let e = error(HEC);
        assert!(e.contains("sinks[0].url: an HTTP sink needs a url"), "{e}");
        let e = error(&format!("{HEC}url = \"ftp://h/\"\ntoken_env = \"T\"\n"));
        assert!(e.contains(":4:") && e.contains("sinks[0].url"), "{e}");
        let e = error(&format!(
            "{HEC}url = \"https://u:pw@h/\"\ntoken_env = \"T\"\n"
        ));
        assert!(e.contains("credentials") && !e.contains("pw@"), "{e}");
        let e = error(&format!("{HEC}url = \"https://h/\"\n"));
        assert!(
            e.contains("sinks[0].token_file: this sink needs a token"),
            "{e}"
        );
        let e = error(&format!(
            "{HEC}url = \"https://h/\"\ntoken_file = \"/t\"\ntoken_env = \"T\"\n"
        ));
        assert!(e.contains(":6:") && e.contains("exclude each other"), "{e}");
        let e = error(&format!(
            "{HEC}url = \"https://h/\"\ntoken_env = \"T\"\ntimeout = \"10ms\"\n"
        ));
        assert!(e.contains("sinks[0].timeout: 100ms to 5m"), "{e}");
        let e = error(&format!(
            "{HEC}url = \"https://h/\"\ntoken_env = \"T\"\nauth = \"basic\"\n"
        ));
        assert!(e.contains("sinks[0].auth"), "{e}");
        let es = "[[sinks]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"https://h:9200\"\ntoken_env = \"T\"\n";
        let e = error(es);
        assert!(
            e.contains("sinks[0].format") && e.contains("\"ecs\""),
            "{e}"
        );
        let e = error(&format!("{es}format = \"ecs\"\ndata_stream = \"Logs-x\"\n"));
        assert!(
            e.contains(":7:") && e.contains("not a data stream name"),
            "{e}"
        );
    }
}
