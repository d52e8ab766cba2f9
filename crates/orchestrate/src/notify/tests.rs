//! Webhooks against a real HTTP server on loopback, written here in a few lines of tokio so the
//! test sees exactly the bytes on the wire and decides every answer.

use super::*;
use crate::schedule::utc;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "T0SECRET/B0SECRET/xoxbSECRETtoken";

#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 server answering each request with the next scripted (status, extra header)
/// and 200 once the script runs out; one connection at a time, `Connection: close`.
struct Server {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    _task: AbortOnDrop<()>,
}

impl Server {
    async fn start(script: &[(u16, Option<(&str, &str)>)]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: VecDeque<(u16, Option<(String, String)>)> = script
            .iter()
            .map(|(s, h)| (*s, h.map(|(k, v)| (k.to_string(), v.to_string()))))
            .collect();
        let script = Arc::new(Mutex::new(script));
        let log = requests.clone();
        #[allow(clippy::disallowed_methods)] // wrapped: aborted with the server
        let task = AbortOnDrop(tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut lines = head.split("\r\n");
                let path = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or("")
                    .to_string();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
                log.lock().unwrap().push(Request {
                    path,
                    headers,
                    body,
                });
                let (status, extra) = script.lock().unwrap().pop_front().unwrap_or((200, None));
                let extra = extra
                    .map(|(k, v)| format!("{k}: {v}\r\n"))
                    .unwrap_or_default();
                let text = if status == 200 { "ok" } else { "nope" };
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{text}",
                    text.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        }));
        Server {
            addr,
            requests,
            _task: task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/{SECRET}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Logs of everything, captured for the test's thread (tests run on a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let c = Captured::default();
        let writer = c.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (c, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(2),
        max_delay: Duration::from_millis(20),
    }
}

fn hook(url: &str, format: WebhookFormat, attempts: u32) -> WebhookConfig {
    WebhookConfig {
        format,
        max_attempts: attempts,
        ..WebhookConfig::new(url)
    }
}

fn event() -> Event {
    Event::new(
        EventKind::RunFailed,
        "/srv/lake",
        "run 7 failed: disk full <oops> & more",
    )
    .with_run(7)
    .with_details(json!({"failed_files": ["stores/a.csv"], "error": "disk full"}))
    .with_at(utc("2025-05-06T02:00:00Z"))
}

fn dead_letters(n: &Notifier) -> Vec<Value> {
    std::fs::read_to_string(n.dead_letter_path())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn redact_url_keeps_scheme_host_and_port_only() {
    let cases = [
        (
            "https://hooks.slack.com/services/T0/B0/XXXX",
            "https://hooks.slack.com/…",
        ),
        (
            "http://user:pw@host.example:8080/p?token=1",
            "http://host.example:8080/…",
        ),
        ("https://example.com", "https://example.com"),
        ("https://example.com?key=s3cret", "https://example.com/…"),
        ("https://u:p@example.com", "https://example.com/…"),
        ("http://[::1]:9000/x", "http://[::1]:9000/…"),
        ("not a url/secret", "…"),
        ("mailto:me@example.com", "…"),
    ];
    for (url, want) in cases {
        assert_eq!(redact_url(url), want, "{url}");
    }
}

#[test]
fn retry_after_in_seconds_or_as_a_date() {
    let now = utc("2025-05-06T10:00:00Z");
    assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
    assert_eq!(
        parse_retry_after("Tue, 06 May 2025 10:00:30 GMT", now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after("Tue, 06 May 2025 09:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
    let e = PostError::Status {
        code: 429,
        retry_after: Some(Duration::from_secs(3)),
        body: String::new(),
    };
    assert_eq!(classify(&e), Transience::RetryAfter(Duration::from_secs(3)));
    for (code, t) in [
        (500, Transience::Transient),
        (503, Transience::Transient),
        (408, Transience::Transient),
        (429, Transience::Transient),
        (400, Transience::Permanent),
        (401, Transience::Permanent),
        (404, Transience::Permanent),
    ] {
        let e = PostError::Status {
            code,
            retry_after: None,
            body: String::new(),
        };
        assert_eq!(classify(&e), t, "{code}");
    }
}

#[test]
fn quarantine_spike_above_the_rate_only() {
    assert!(Event::quarantine_spike("l", 1, 1000, 50, 0.05).is_none());
    let e = Event::quarantine_spike("l", 1, 1000, 51, 0.05).unwrap();
    assert_eq!(e.kind, EventKind::QuarantineSpike);
    assert_eq!(e.details["rows_quarantined"], 51);
    assert!(
        e.message.contains("51 of 1000 rows (5.1%)"),
        "{}",
        e.message
    );
    assert!(Event::quarantine_spike("l", 1, 0, 0, 0.05).is_none());
}

#[tokio::test]
async fn json_events_are_retried_through_5xx_and_the_secret_is_never_logged() {
    let (logs, _guard) = Captured::start();
    let server = Server::start(&[(500, None), (503, None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::new(
        &[hook(&server.url(), WebhookFormat::Json, 5)],
        fast(),
        dir.path(),
    )
    .unwrap();
    let e = event();
    let d = n.send(&e).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].error, None, "{d:?}");
    assert_eq!(d[0].attempts, 3);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.path, format!("/hooks/{SECRET}"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.body,
            json!({
                "kind": "run_failed",
                "run_id": 7,
                "lake": "/srv/lake",
                "message": "run 7 failed: disk full <oops> & more",
                "details": {"failed_files": ["stores/a.csv"], "error": "disk full"},
                "at": "2025-05-06T02:00:00Z",
            })
        );
    }
    assert!(dead_letters(&n).is_empty());
    let logs = logs.text();
    assert!(logs.contains("transient failure, retrying"), "{logs}");
    assert!(
        logs.contains(&format!("http://{}/…", server.addr)),
        "{logs}"
    );
    assert!(
        logs.contains("shoplake::event") && logs.contains("kind=\"run_failed\""),
        "{logs}"
    );
    assert!(
        !logs.contains("SECRET"),
        "the URL leaked into the logs:\n{logs}"
    );
    assert!(!format!("{n:?}").contains("SECRET"));
}

#[tokio::test]
async fn slack_format_is_a_readable_message() {
    let server = Server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::new(
        &[hook(&server.url(), WebhookFormat::Slack, 1)],
        fast(),
        dir.path(),
    )
    .unwrap();
    n.send(&event()).await;
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let b = &reqs[0].body;
    assert_eq!(
        b["text"],
        ":x: shoplake: Run failed (run 7): run 7 failed: disk full &lt;oops&gt; &amp; more"
    );
    let blocks = b["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], ":x: Run failed");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    let fields: Vec<_> = blocks[2]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        fields,
        [
            "*Lake*\n/srv/lake",
            "*Run*\n7",
            "*Event*\n`run_failed`",
            "*At*\n2025-05-06 02:00:00 UTC"
        ]
    );
    let details = blocks[3]["text"]["text"].as_str().unwrap();
    assert!(
        details.starts_with("```") && details.contains("stores/a.csv"),
        "{details}"
    );
}

#[tokio::test]
async fn a_400_is_permanent_and_goes_to_the_dead_letter_log() {
    let (logs, _guard) = Captured::start();
    let server = Server::start(&[(400, None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::new(
        &[hook(&server.url(), WebhookFormat::Json, 5)],
        fast(),
        dir.path(),
    )
    .unwrap();
    let d = n.send(&event()).await;
    assert_eq!(server.requests().len(), 1, "not retried");
    assert_eq!(d[0].attempts, 1);
    let err = d[0].error.clone().unwrap();
    assert_eq!(err, "HTTP 400 Bad Request: nope");
    let dl = dead_letters(&n);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["webhook"], format!("http://{}/…", server.addr));
    assert_eq!(dl[0]["error"], "HTTP 400 Bad Request: nope");
    assert_eq!(dl[0]["attempts"], 1);
    assert_eq!(dl[0]["kind"], "run_failed");
    assert_eq!(dl[0]["run_id"], 7);
    assert_eq!(
        dl[0]["body"]["message"],
        "run 7 failed: disk full <oops> & more"
    );
    let file = std::fs::read_to_string(n.dead_letter_path()).unwrap();
    assert!(!file.contains("SECRET"), "{file}");
    assert!(!logs.text().contains("SECRET"), "{}", logs.text());
}

#[tokio::test]
async fn retries_run_out_then_dead_letter() {
    let server = Server::start(&[
        (503, None),
        (502, None),
        (500, None),
        (500, None),
        (500, None),
        (500, None),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::new(
        &[hook(&server.url(), WebhookFormat::Json, 3)],
        fast(),
        dir.path(),
    )
    .unwrap();
    let d = n.send(&event()).await;
    assert_eq!(server.requests().len(), 3);
    assert_eq!(d[0].attempts, 3);
    assert!(
        d[0].error.as_deref().unwrap().starts_with("HTTP 500"),
        "{d:?}"
    );
    let dl = dead_letters(&n);
    assert_eq!((dl.len(), dl[0]["attempts"].as_u64()), (1, Some(3)));
    // Another event that fails appends a line.
    n.send(&event()).await;
    assert_eq!(server.requests().len(), 6);
    assert_eq!(dead_letters(&n).len(), 2);
}

#[tokio::test]
async fn a_429_is_retried_and_its_retry_after_honoured() {
    let server = Server::start(&[(429, Some(("Retry-After", "0"))), (429, None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::new(
        &[hook(&server.url(), WebhookFormat::Json, 5)],
        fast(),
        dir.path(),
    )
    .unwrap();
    let d = n.send(&event()).await;
    assert_eq!((d[0].attempts, d[0].error.clone()), (3, None));
}

#[tokio::test]
async fn connection_errors_are_retried_without_showing_the_url() {
    let (logs, _guard) = Captured::start();
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hooks/{SECRET}");
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::new(&[hook(&url, WebhookFormat::Json, 2)], fast(), dir.path()).unwrap();
    let d = n.send(&event()).await;
    assert_eq!(d[0].attempts, 2);
    let err = d[0].error.clone().unwrap();
    assert!(err.starts_with("cannot connect"), "{err}");
    assert!(!err.contains("SECRET"), "{err}");
    let file = std::fs::read_to_string(n.dead_letter_path()).unwrap();
    assert!(
        file.contains(&format!("http://127.0.0.1:{port}/…")),
        "{file}"
    );
    assert!(!file.contains("SECRET"), "{file}");
    assert!(!logs.text().contains("SECRET"), "{}", logs.text());
}

#[tokio::test]
async fn webhooks_get_only_the_events_they_subscribe_to() {
    let all = Server::start(&[]).await;
    let failures = Server::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut everything = hook(&all.url(), WebhookFormat::Json, 1);
    everything.events = EventKind::ALL.to_vec();
    let default = hook(&failures.url(), WebhookFormat::Json, 1);
    let n = Notifier::new(&[everything, default], fast(), dir.path()).unwrap();
    let ok = Event::new(EventKind::RunSucceeded, "l", "run 8 loaded 10 rows").with_run(8);
    assert_eq!(n.send(&ok).await.len(), 1);
    assert_eq!(n.send(&event()).await.len(), 2);
    let kinds = |s: &Server| -> Vec<String> {
        s.requests()
            .iter()
            .map(|r| r.body["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds(&all), ["run_succeeded", "run_failed"]);
    assert_eq!(
        kinds(&failures),
        ["run_failed"],
        "run_succeeded is off by default"
    );
}

#[tokio::test]
async fn the_queue_delivers_in_the_background_and_flushes() {
    let server = Server::start(&[(500, None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let n = Arc::new(
        Notifier::new(
            &[hook(&server.url(), WebhookFormat::Json, 3)],
            fast(),
            dir.path(),
        )
        .unwrap(),
    );
    let q = n.clone().spawn_queue(16);
    for run in 1..=3 {
        assert!(q.enqueue(event().with_run(run)));
    }
    // Not subscribed: logged, not queued.
    assert!(q.enqueue(Event::new(EventKind::RunSucceeded, "l", "fine")));
    assert!(q.flush(Duration::from_secs(30)).await, "drained");
    let runs: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.body["run_id"].as_i64().unwrap())
        .collect();
    assert_eq!(runs, [1, 1, 2, 3], "the first was retried once");
    assert!(dead_letters(&n).is_empty());
}

#[tokio::test]
async fn a_full_queue_dead_letters_instead_of_blocking() {
    // A server that never answers within the test: the worker is stuck on the first event.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/{SECRET}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut w = hook(&url, WebhookFormat::Json, 1);
    w.timeout_ms = 60_000;
    let n = Arc::new(Notifier::new(&[w], fast(), dir.path()).unwrap());
    let q = n.clone().spawn_queue(1);
    let mut accepted = 0;
    for run in 1..=5 {
        if q.enqueue(event().with_run(run)) {
            accepted += 1;
        }
        tokio::task::yield_now().await;
    }
    assert!(accepted < 5, "a queue of one cannot take five stuck events");
    let dl = dead_letters(&n);
    assert_eq!(dl.len(), 5 - accepted);
    assert_eq!(dl[0]["error"], "notification queue full");
    assert!(
        !std::fs::read_to_string(n.dead_letter_path())
            .unwrap()
            .contains("SECRET")
    );
    drop(listener);
}

#[test]
fn urls_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(
        "[[notify.webhooks]]\nurl_env = \"SLACK_HOOK\"\nformat = \"slack\"\nevents = [\"run_failed\"]\n",
        Path::new("x.toml"),
    )
    .unwrap();
    let n = Notifier::from_config_with_env(&config, dir.path(), |v| {
        (v == "SLACK_HOOK").then(|| format!("https://hooks.slack.com/services/{SECRET}"))
    })
    .unwrap();
    assert_eq!(n.subscribers(EventKind::RunFailed), 1);
    assert_eq!(n.subscribers(EventKind::SchemaDrift), 0);
    assert!(format!("{n:?}").contains("hooks.slack.com/…"));
    let err = Notifier::from_config_with_env(&config, dir.path(), |_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("SLACK_HOOK is not set"), "{err}");
    let err =
        Notifier::from_config_with_env(&config, dir.path(), |_| Some(format!("ftp://x/{SECRET}")))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("must start with http://") && !err.contains("SECRET"),
        "{err}"
    );
}
