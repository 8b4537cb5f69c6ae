//! The SMTP destination against a real SMTP server on 127.0.0.1: the aiosmtpd sink of
//! `scripts/peers/smtp_sink.py`, which stores every message it receives as one `.eml` file
//! in `OUTFLOW_TEST_SMTP_MAILDIR` and accepts AUTH for user `outflow` (any password) but not
//! for `bad`. Messages are read back from those files with `mail-parser`, independently of
//! lettre.

mod conformance;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Arrival, Dedupe, Peer, peers};
use mail_parser::{MessageParser, MimeHeaders};
use outflow_core::attempt::FailureClass;
use outflow_core::context::JobContext;
use outflow_core::output::Output;
use outflow_destinations::runner::new_delivery_id;
use serde_json::{Value, json};

/// One received message, parsed.
struct Mail {
    raw: Vec<u8>,
    /// The sink's `<stem>.envelope.json` sidecar: `mail_from`, `rcpt_tos`, `auth_user`.
    envelope: Option<Value>,
}

impl Mail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        MessageParser::default().parse(&self.raw).expect("the sink stored a parsable message")
    }
}

struct SmtpPeer {
    addr: SocketAddr,
    maildir: PathBuf,
    /// File name → its header block, so polling does not re-read large messages.
    seen: Mutex<HashMap<String, String>>,
}

impl SmtpPeer {
    fn connect() -> Option<SmtpPeer> {
        let url = peers::require("SMTP sink", "OUTFLOW_TEST_SMTP_URL", "smtp://127.0.0.1:2525")?;
        let addr = peers::socket_addr(&url).expect("OUTFLOW_TEST_SMTP_URL has host:port");
        let maildir = peers::setting("OUTFLOW_TEST_SMTP_MAILDIR", "");
        if maildir.is_empty() {
            peers::skip(
                "OUTFLOW_TEST_SMTP_MAILDIR is not set: the SMTP sink's maildir is needed to read \
                 messages back (run `scripts/services.sh up`)",
            );
            return None;
        }
        Some(SmtpPeer { addr, maildir: PathBuf::from(maildir), seen: Mutex::default() })
    }

    fn address(location: &str) -> String {
        format!("{location}@example.test")
    }

    /// Every stored message whose headers mention `needle`, oldest first.
    fn matching(&self, needle: &str) -> Vec<Mail> {
        let mut names: Vec<String> = std::fs::read_dir(&self.maildir)
            .expect("the maildir is readable")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".eml") && !n.starts_with('.'))
            .collect();
        names.sort();
        let mut seen = self.seen.lock().unwrap();
        let mut out = Vec::new();
        for name in names {
            let path = self.maildir.join(&name);
            if !seen.contains_key(&name) {
                let Ok(raw) = std::fs::read(&path) else { continue };
                let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
                let headers = String::from_utf8_lossy(&raw[..end]).into_owned();
                seen.insert(name.clone(), headers);
            }
            if seen[&name].contains(needle) {
                let sidecar = path.with_file_name(name.replace(".eml", ".envelope.json"));
                let envelope = std::fs::read(sidecar)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                out.push(Mail { raw: std::fs::read(&path).expect("stored message"), envelope });
            }
        }
        out
    }

    /// Waits until `expected` messages mention `needle` or `wait` has passed.
    async fn wait_for(&self, needle: &str, expected: usize, wait: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + wait;
        loop {
            let found = self.matching(needle);
            if found.len() >= expected || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn base_spec(&self) -> Value {
        json!({
            "type": "smtp",
            "host": self.addr.ip().to_string(),
            "port": self.addr.port(),
            "security": "none",
            "from": "Outflow <outflow@example.test>",
        })
    }
}

fn delivery_id_of(message: &mail_parser::Message<'_>) -> Option<String> {
    message.message_id().and_then(|id| id.strip_suffix("@outflow")).map(str::to_string)
}

#[async_trait]
impl Peer for SmtpPeer {
    fn kind(&self) -> &'static str {
        "smtp"
    }

    fn upstream(&self) -> SocketAddr {
        self.addr
    }

    fn spec(&self, addr: SocketAddr, name: &str) -> Value {
        let mut spec = self.base_spec();
        spec["host"] = json!(addr.ip().to_string());
        spec["port"] = json!(addr.port());
        spec["to"] = json!([Self::address(name)]);
        spec["subject"] = json!(format!("conformance {name}"));
        spec["attach_output"] = json!(true);
        spec
    }

    async fn read_back(&self, location: &str, expected: usize) -> Vec<Arrival> {
        let wait = Duration::from_secs(if expected > 10 { 30 } else { 5 });
        self.wait_for(&Self::address(location), expected, wait)
            .await
            .iter()
            .map(|mail| {
                let message = mail.parsed();
                let body = match message.attachment(0) {
                    Some(part) => part.contents().to_vec(),
                    None => message.body_text(0).unwrap_or_default().as_bytes().to_vec(),
                };
                Arrival { body, delivery_id: delivery_id_of(&message) }
            })
            .collect()
    }

    fn dedupe(&self) -> Dedupe {
        Dedupe::CarriesId
    }

    fn permanent_failure(&self, addr: SocketAddr, name: &str) -> (Value, &'static str) {
        let mut spec = self.spec(addr, name);
        spec["username"] = json!("bad");
        spec["password"] = json!("wrong");
        (spec, "authentication")
    }

    fn required_fields(&self) -> &'static [&'static str] {
        &["host", "from", "to"]
    }
}

conformance_suite!(SmtpPeer::connect());

// ---- SMTP-specific behaviour, against the same sink ----

fn job_with(meta: Value) -> JobContext {
    let mut job = conformance::job("report");
    job.job_id = Some(42);
    job.duration_ms = 1234;
    for (k, v) in meta.as_object().unwrap() {
        job.metadata.insert(k.clone(), v.clone());
    }
    job
}

#[tokio::test]
async fn html_body_is_an_escaped_alternative_and_the_output_is_attached() {
    let Some(peer) = SmtpPeer::connect() else { return };
    let name = conformance::unique_name("smtp");
    let mut spec = peer.base_spec();
    spec["to"] = json!([SmtpPeer::address(&name)]);
    spec["subject"] = json!("html {{task_name}}");
    spec["body"] = json!("Plain: {{task_name}} is {{status}}, see {{attachment_name}}");
    spec["html_body"] = json!("<p>{{task_name}}: {{meta.note}}</p>");
    spec["attachment_name"] = json!("{{task_name}}-{{date}}.csv");
    spec["format"] = json!("csv");
    let dest = conformance::build(&spec);
    let job = job_with(json!({"note": "<b>bold</b> & co"}));
    let output = Output::Json(json!([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]));
    let id = new_delivery_id();
    conformance::deliver(dest.as_ref(), &job, &output, &id).await.expect("delivered");

    let mails = peer.wait_for(&SmtpPeer::address(&name), 1, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 1);
    let message = mails[0].parsed();
    assert_eq!(message.subject(), Some("html report"));
    assert_eq!(delivery_id_of(&message).as_deref(), Some(id.as_str()));
    let date = job.completed_at.format("%Y-%m-%d");
    let text = message.body_text(0).expect("a text body");
    assert_eq!(text.trim_end(), format!("Plain: report is completed, see report-{date}.csv"));
    let html = message.body_html(0).expect("an html body");
    assert_eq!(html.trim_end(), "<p>report: &lt;b&gt;bold&lt;/b&gt; &amp; co</p>");
    let raw = String::from_utf8_lossy(&mails[0].raw);
    assert!(raw.contains("multipart/alternative"), "text and html form an alternative");
    assert!(raw.contains("multipart/mixed"), "the attachment sits beside the alternative");
    assert_eq!(message.attachment_count(), 1);
    let attachment = message.attachment(0).unwrap();
    assert_eq!(attachment.attachment_name(), Some(format!("report-{date}.csv").as_str()));
    let ctype = attachment.content_type().expect("attachment content type");
    assert_eq!((ctype.ctype(), ctype.subtype()), ("text", Some("csv")));
    assert_eq!(attachment.contents(), b"a,b\n1,x\n2,y\n");
}

#[tokio::test]
async fn inline_output_is_cut_at_a_character_boundary_with_a_note() {
    let Some(peer) = SmtpPeer::connect() else { return };
    let name = conformance::unique_name("smtp");
    let mut spec = peer.base_spec();
    spec["to"] = json!([SmtpPeer::address(&name)]);
    spec["attach_output"] = json!(false);
    spec["max_inline_bytes"] = json!(101);
    let dest = conformance::build(&spec);
    let job = job_with(json!({}));
    // 'é' is two bytes: byte 101 falls inside the 51st 'é', which must not be split.
    let long = Output::Text("é".repeat(300));
    conformance::deliver(dest.as_ref(), &job, &long, &new_delivery_id()).await.expect("long");
    let short = Output::Text("short output ✓".into());
    conformance::deliver(dest.as_ref(), &job, &short, &new_delivery_id()).await.expect("short");

    let mails = peer.wait_for(&SmtpPeer::address(&name), 2, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 2);
    let texts: Vec<String> = mails
        .iter()
        .map(|m| {
            let message = m.parsed();
            assert_eq!(message.attachment_count(), 0, "nothing is attached when inlining");
            // Text parts travel in MIME's canonical form, with CRLF line ends.
            message.body_text(0).expect("text body").replace("\r\n", "\n")
        })
        .collect();
    let long_text = texts.iter().find(|t| t.contains("(600 bytes)")).expect("the long one");
    assert!(long_text.starts_with("Task:      report\nStatus:    completed\n"), "{long_text}");
    let shown = format!("---- output (600 bytes) ----\n{}\n", "é".repeat(50));
    assert!(long_text.contains(&shown), "{long_text}");
    assert!(
        long_text.contains(
            "[output truncated: 100 of 600 bytes shown; set attach_output: true to receive it whole]"
        ),
        "{long_text}"
    );
    let short_text = texts.iter().find(|t| t.contains("short output")).expect("the short one");
    assert!(short_text.contains("---- output (16 bytes) ----\nshort output ✓\n"), "{short_text}");
    assert!(!short_text.contains("truncated"), "{short_text}");
}

#[tokio::test]
async fn templated_subject_and_recipients_render_from_the_job() {
    let Some(peer) = SmtpPeer::connect() else { return };
    let name = conformance::unique_name("smtp");
    let mut spec = peer.base_spec();
    spec["to"] = json!(["{{meta.owner}}@example.test"]);
    spec["cc"] = json!(["Ops <{{meta.owner}}-cc@example.test>"]);
    spec["bcc"] = json!("{{meta.owner}}-bcc@example.test");
    spec["subject"] = json!("{{task_name}} {{status}} for {{meta.owner}}");
    let dest = conformance::build(&spec);
    let job = job_with(json!({"owner": name}));
    let receipt =
        conformance::deliver(dest.as_ref(), &job, &Output::Text("x".into()), &new_delivery_id())
            .await
            .expect("delivered");
    assert_eq!(receipt.status_code, Some(250));
    assert_eq!(
        receipt.target,
        format!(
            "smtp://{} to {name}@example.test, {name}-cc@example.test, {name}-bcc@example.test",
            peer.addr
        )
    );
    let mails = peer.wait_for(&SmtpPeer::address(&name), 1, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 1);
    let message = mails[0].parsed();
    assert_eq!(message.subject(), Some(format!("report completed for {name}").as_str()));
    let to = message.to().and_then(|a| a.first()).and_then(|a| a.address()).unwrap();
    assert_eq!(to, format!("{name}@example.test"));
    let cc = message.cc().and_then(|a| a.first()).unwrap();
    assert_eq!(
        (cc.name(), cc.address()),
        (Some("Ops"), Some(format!("{name}-cc@example.test").as_str()))
    );
    assert!(message.bcc().is_none(), "Bcc recipients are not in the headers");
    let envelope = mails[0].envelope.as_ref().expect("the sink's envelope sidecar");
    assert_eq!(envelope["mail_from"], "outflow@example.test");
    assert_eq!(
        envelope["rcpt_tos"],
        json!([
            format!("{name}@example.test"),
            format!("{name}-cc@example.test"),
            format!("{name}-bcc@example.test")
        ]),
        "Bcc recipients are in the envelope"
    );
}

#[tokio::test]
async fn a_bad_rendered_address_is_permanent_and_named() {
    let Some(peer) = SmtpPeer::connect() else { return };
    let name = conformance::unique_name("smtp");
    let mut spec = peer.base_spec();
    spec["to"] = json!([SmtpPeer::address(&name), "{{meta.owner}}"]);
    let dest = conformance::build(&spec);
    let job = job_with(json!({"owner": "not an address"}));
    let err =
        conformance::deliver(dest.as_ref(), &job, &Output::Text("x".into()), &new_delivery_id())
            .await
            .expect_err("an invalid recipient fails");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(
        err.message.starts_with(
            "to[1] (template '{{meta.owner}}'): 'not an address' is not a valid email address"
        ),
        "{}",
        err.message
    );
    let mails = peer.wait_for(&SmtpPeer::address(&name), 1, Duration::from_millis(500)).await;
    assert!(mails.is_empty(), "nothing is sent when one address is invalid");
}

#[tokio::test]
async fn authentication_succeeds_for_a_known_user_and_fails_permanently_otherwise() {
    let Some(peer) = SmtpPeer::connect() else { return };
    let name = conformance::unique_name("smtp");
    let mut spec = peer.spec(peer.addr, &name);
    spec["username"] = json!("outflow");
    spec["password"] = json!("s3cret-pass");
    let good = conformance::build(&spec);
    good.check().await.expect("EHLO + AUTH as outflow");
    conformance::deliver(
        good.as_ref(),
        &job_with(json!({})),
        &Output::Text("hi".into()),
        &new_delivery_id(),
    )
    .await
    .expect("an authenticated delivery");
    let mails = peer.wait_for(&SmtpPeer::address(&name), 1, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 1);
    let envelope = mails[0].envelope.as_ref().expect("the sink's envelope sidecar");
    assert_eq!(envelope["auth_user"], "outflow", "the message was sent after AUTH");

    spec["username"] = json!("bad");
    let bad = conformance::build(&spec);
    let err = bad.check().await.expect_err("AUTH as bad is refused");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert_eq!(err.status_code, Some(535));
    assert!(err.message.contains("refused authentication"), "{}", err.message);
    for text in [format!("{bad:?}"), bad.describe(), err.message.clone()] {
        assert!(!text.contains("s3cret-pass"), "the password leaked: {text}");
    }
}

#[tokio::test]
async fn a_closed_port_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let spec = json!({"type": "smtp", "host": "127.0.0.1", "port": addr.port(), "security": "none",
        "from": "a@example.test", "to": ["b@example.test"], "timeout_seconds": 5});
    let dest = conformance::build(&spec);
    let err = conformance::deliver(
        dest.as_ref(),
        &job_with(json!({})),
        &Output::Text("x".into()),
        &new_delivery_id(),
    )
    .await
    .expect_err("nothing listens");
    assert_eq!(err.class, FailureClass::Retryable, "{err:?}");
    assert!(
        err.message.starts_with(&format!("smtp://{addr} to b@example.test: connection failed")),
        "{}",
        err.message
    );
    assert_eq!(dest.check().await.expect_err("check fails").class, FailureClass::Retryable);
}

/// A scripted SMTP server on 127.0.0.1 for replies the sink never gives (4xx, 550): it
/// speaks just enough SMTP for lettre and answers `MAIL FROM` and `RCPT TO` as told.
async fn scripted_smtp(mail_reply: &'static str, rcpt_reply: &'static str) -> SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 scripted ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply: &str = if in_data {
                        if line != "." {
                            continue;
                        }
                        in_data = false;
                        "250 queued"
                    } else {
                        match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                            "EHLO" | "HELO" => "250 scripted",
                            "MAIL" => mail_reply,
                            "RCPT" => rcpt_reply,
                            "DATA" => {
                                in_data = true;
                                "354 go ahead"
                            }
                            "QUIT" => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => "250 ok",
                        }
                    };
                    if write.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn smtp_4xx_replies_are_retryable_and_5xx_permanent() {
    for (mail, rcpt, class, code) in [
        ("451 4.3.0 try again later", "250 ok", FailureClass::Retryable, 451),
        ("250 ok", "452 4.2.2 mailbox full", FailureClass::Retryable, 452),
        ("250 ok", "550 5.1.1 no such user", FailureClass::Permanent, 550),
        ("552 5.3.4 message too big", "250 ok", FailureClass::Permanent, 552),
    ] {
        let addr = scripted_smtp(mail, rcpt).await;
        let spec = json!({"type": "smtp", "host": "127.0.0.1", "port": addr.port(),
            "security": "none", "from": "a@example.test", "to": ["b@example.test"]});
        let dest = conformance::build(&spec);
        let err = conformance::deliver(
            dest.as_ref(),
            &job_with(json!({})),
            &Output::Text("x".into()),
            &new_delivery_id(),
        )
        .await
        .expect_err("the scripted server refuses");
        assert_eq!(err.class, class, "{code}: {err:?}");
        assert_eq!(err.status_code, Some(code), "{err:?}");
        assert!(
            err.message.starts_with(&format!("smtp://{addr} to b@example.test: ")),
            "{}",
            err.message
        );
        assert!(err.message.contains(&code.to_string()), "{}", err.message);
    }
    // And the scripted server does take a message when it says 250 throughout.
    let addr = scripted_smtp("250 ok", "250 ok").await;
    let spec = json!({"type": "smtp", "host": "127.0.0.1", "port": addr.port(),
        "security": "none", "from": "a@example.test", "to": ["b@example.test"]});
    let dest = conformance::build(&spec);
    let receipt = conformance::deliver(
        dest.as_ref(),
        &job_with(json!({})),
        &Output::Text("x".into()),
        &new_delivery_id(),
    )
    .await
    .expect("accepted");
    assert_eq!(receipt.response_excerpt.as_deref(), Some("queued"));
}

#[tokio::test]
async fn required_starttls_on_a_server_without_it_is_permanent() {
    let Some(peer) = SmtpPeer::connect() else { return };
    let name = conformance::unique_name("smtp");
    let mut spec = peer.spec(peer.addr, &name);
    spec["security"] = json!("starttls");
    let dest = conformance::build(&spec);
    let err = conformance::deliver(
        dest.as_ref(),
        &job_with(json!({})),
        &Output::Text("x".into()),
        &new_delivery_id(),
    )
    .await
    .expect_err("the sink offers no STARTTLS and plain text was not allowed");
    assert_eq!(err.class, FailureClass::Permanent, "{err:?}");
    assert!(err.message.contains("STARTTLS is not supported"), "{}", err.message);
    let mails = peer.wait_for(&SmtpPeer::address(&name), 1, Duration::from_millis(300)).await;
    assert!(mails.is_empty(), "nothing travels in plain text");
}
