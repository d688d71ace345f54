//! LLM enrichment against an in-process HTTP server on 127.0.0.1 that scripts its answers:
//! success, 429 with Retry-After, 500 then success, a timeout, malformed JSON, a `<think>` block,
//! a non-retryable 400, an endpoint that is down, and a killed run resumed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llm_emf::data::{Dataset, Domain, Item, TrainingData};
use llm_emf::enrich::{
    self, ChatClient, ClientConfig, EnrichOptions, EnrichRecord, PAPER_TEMPLATE, PromptTemplate,
    read_records,
};

/// A request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    prompt: String,
    auth: Option<String>,
}

/// A scripted answer.
enum Reply {
    Status(u16, Vec<(&'static str, String)>, String),
    Late(Duration, Box<Reply>),
}

fn ok(content: &str) -> Reply {
    let body = serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]});
    Reply::Status(200, vec![], body.to_string())
}

type Handler = dyn Fn(&str, usize) -> Reply + Send + Sync;

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Serves `handler(title, nth request for that title)`, one connection per request.
    fn start(handler: Box<Handler>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let handler: Arc<Handler> = Arc::from(handler);
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (seen, counts, handler) = (seen2.clone(), counts.clone(), handler.clone());
                std::thread::spawn(move || serve_one(stream, &seen, &counts, &*handler));
            }
        });
        Server { url, seen }
    }

    fn prompts_for(&self, title: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| title_of(&s.prompt) == title)
            .count()
    }
}

/// The title inside a paper-template prompt.
fn title_of(prompt: &str) -> String {
    let start = prompt.find(" with ").map(|i| i + 6).unwrap_or(0);
    let end = prompt.find(". Provide").unwrap_or(prompt.len());
    prompt[start..end].to_string()
}

fn serve_one(
    stream: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    counts: &Mutex<HashMap<String, usize>>,
    handler: &Handler,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (mut length, mut auth) = (0usize, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if lower.starts_with("authorization:") {
            auth = Some(line["authorization:".len()..].trim().to_string());
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let prompt = request["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    seen.lock().unwrap().push(Seen {
        prompt: prompt.clone(),
        auth,
    });
    let title = title_of(&prompt);
    let nth = {
        let mut c = counts.lock().unwrap();
        let n = c.entry(title.clone()).or_default();
        *n += 1;
        *n
    };
    let mut reply = handler(&title, nth);
    let mut stream = stream;
    while let Reply::Late(delay, inner) = reply {
        std::thread::sleep(delay);
        reply = *inner;
    }
    let Reply::Status(code, headers, body) = reply else {
        unreachable!()
    };
    let mut out = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}

fn dataset(titles: &[Option<&str>]) -> Dataset {
    let n = titles.len() as u32;
    let items = titles
        .iter()
        .map(|t| Item {
            title: t.map(String::from),
            attributes: None,
            key: None,
        })
        .collect();
    let x = n / 2;
    Dataset::new(
        "tiny",
        [
            Domain {
                name: "Art".into(),
                start: 0,
                len: x,
            },
            Domain {
                name: "Office".into(),
                start: x,
                len: n - x,
            },
        ],
        items,
        TrainingData::Present(vec![]),
        vec![],
        vec![],
    )
    .unwrap()
}

fn client(url: &str) -> ChatClient {
    let mut c = ClientConfig::new(url, "test-model");
    c.timeout = Duration::from_millis(400);
    c.backoff = Duration::from_millis(5);
    c.max_backoff = Duration::from_secs(2);
    c.max_retries = 3;
    c.api_key = Some("sk-test-secret".into());
    ChatClient::new(c)
}

fn quiet(concurrency: usize) -> EnrichOptions {
    EnrichOptions {
        concurrency,
        progress: false,
        ..EnrichOptions::default()
    }
}

fn by_title(path: &Path) -> HashMap<String, EnrichRecord> {
    read_records(path)
        .unwrap()
        .into_iter()
        .map(|r| (r.title.clone(), r))
        .collect()
}

#[test]
fn every_titled_item_gets_the_paper_prompt_and_a_line() {
    let server = Server::start(Box::new(|title, _| ok(&format!("About {title}."))));
    let data = dataset(&[
        Some("Pencil set &amp; box"),
        None,
        Some("Stapler"),
        Some("Ink"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("enriched.jsonl");
    let summary = enrich::enrich(
        &data,
        &PromptTemplate::paper(),
        &client(&server.url),
        &out,
        &quiet(2),
    )
    .unwrap();
    assert_eq!(
        (summary.succeeded, summary.failed, summary.without_title),
        (3, 0, 1)
    );
    let records = by_title(&out);
    assert_eq!(records.len(), 3);
    let pencil = &records["Pencil set &amp; box"];
    assert_eq!(pencil.item_id, 0);
    assert_eq!(pencil.domain, "Art");
    assert_eq!(pencil.text.as_deref(), Some("About Pencil set & box."));
    assert_eq!(pencil.model, "test-model");
    assert_eq!(records["Stapler"].domain, "Office");
    let seen = server.seen.lock().unwrap().clone();
    let prompt = seen.iter().find(|s| s.prompt.contains("Pencil")).unwrap();
    assert_eq!(
        prompt.prompt,
        PAPER_TEMPLATE
            .replace("{domain}", "Art")
            .replace("{title}", "Pencil set & box")
    );
    assert!(
        seen.iter()
            .all(|s| s.auth.as_deref() == Some("Bearer sk-test-secret"))
    );
}

#[test]
fn transient_failures_are_retried_and_permanent_ones_recorded() {
    let server = Server::start(Box::new(|title, nth| match (title, nth) {
        ("Rate limited", 1) => {
            Reply::Status(429, vec![("Retry-After", "1".into())], "slow down".into())
        }
        ("Flaky", 1) => Reply::Status(500, vec![], "oops".into()),
        ("Slow", 1) => Reply::Late(Duration::from_millis(1500), Box::new(ok("late"))),
        ("Garbled", _) => Reply::Status(200, vec![], "{\"choices\": [".into()),
        ("Thinker", _) => {
            ok("<think>The user wants keywords.\nLet me think.</think>\n\nKeywords: tea.")
        }
        ("Bad request", _) => Reply::Status(400, vec![], "{\"error\": \"bad model\"}".into()),
        (t, _) => ok(&format!("fine {t}")),
    }));
    let titles = [
        "Rate limited",
        "Flaky",
        "Slow",
        "Garbled",
        "Thinker",
        "Bad request",
        "Plain",
    ];
    let data = dataset(&titles.map(Some));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("enriched.jsonl");
    let start = Instant::now();
    let summary = enrich::enrich(
        &data,
        &PromptTemplate::paper(),
        &client(&server.url),
        &out,
        &quiet(3),
    )
    .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    assert_eq!((summary.succeeded, summary.failed), (5, 2), "{summary}");
    let r = by_title(&out);
    assert_eq!(r["Rate limited"].text.as_deref(), Some("fine Rate limited"));
    assert_eq!(r["Rate limited"].tries, 2);
    assert_eq!(r["Flaky"].tries, 2);
    assert_eq!(r["Slow"].text.as_deref(), Some("fine Slow"));
    assert_eq!(r["Slow"].tries, 2);
    assert_eq!(r["Thinker"].text.as_deref(), Some("Keywords: tea."));
    assert!(
        r["Garbled"]
            .error
            .as_deref()
            .unwrap()
            .contains("malformed JSON")
    );
    assert_eq!(r["Garbled"].tries, 4);
    assert_eq!(server.prompts_for("Garbled"), 4);
    assert!(
        r["Bad request"]
            .error
            .as_deref()
            .unwrap()
            .contains("HTTP 400")
    );
    assert_eq!(server.prompts_for("Bad request"), 1, "a 400 is not retried");
    let file = std::fs::read_to_string(&out).unwrap();
    assert!(!file.contains("sk-test-secret"));
    assert_eq!(file.lines().count(), titles.len());
}

#[test]
fn a_killed_run_resumes_without_repeating_items() {
    let server = Server::start(Box::new(|title, _| ok(&format!("text of {title}"))));
    let titles = ["A", "B", "C", "D", "E"];
    let data = dataset(&titles.map(Some));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("enriched.jsonl");
    let c = client(&server.url);
    let first = enrich::enrich(
        &data,
        &PromptTemplate::paper(),
        &c,
        &out,
        &EnrichOptions {
            limit: Some(2),
            ..quiet(1)
        },
    )
    .unwrap();
    assert_eq!(first.succeeded, 2);
    // The kill: a line half written.
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    f.write_all(b"{\"item_id\": 2, \"domain\": \"Off").unwrap();
    drop(f);
    let second = enrich::enrich(&data, &PromptTemplate::paper(), &c, &out, &quiet(2)).unwrap();
    assert_eq!((second.already_done, second.succeeded), (2, 3));
    for t in titles {
        assert_eq!(server.prompts_for(t), 1, "{t} requested once");
    }
    let records = read_records(&out).unwrap();
    assert_eq!(records.len(), 5);
    let mut ids: Vec<u32> = records.iter().map(|r| r.item_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);

    // Nothing left: a third run makes no request. A new template re-enriches everything.
    let third = enrich::enrich(&data, &PromptTemplate::paper(), &c, &out, &quiet(2)).unwrap();
    assert_eq!((third.already_done, third.requested), (5, 0));
    let other = PromptTemplate::new("Describe {title} ({domain}).").unwrap();
    let fourth = enrich::enrich(&data, &other, &c, &out, &quiet(2)).unwrap();
    assert_eq!(fourth.succeeded, 5);
}

#[test]
fn unusable_answers_are_asked_again_only_when_asked_and_the_new_answer_wins() {
    // The first answer of "Long desk lamp" only restates the title (unusable); a second
    // request gets a real answer.
    let server = Server::start(Box::new(|title, nth| {
        if title == "Long desk lamp" && nth == 1 {
            ok("The Long desk lamp is a lamp.")
        } else {
            ok(&format!(
                "{title} suits people who work late and like warm light on a small tidy desk."
            ))
        }
    }));
    let titles = ["Ink", "Long desk lamp", "Stapler"];
    let data = dataset(&titles.map(Some));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("enriched.jsonl");
    let c = client(&server.url);
    let template = PromptTemplate::paper();
    let usable =
        |path: &Path| enrich::quality::check(&read_records(path).unwrap(), &template, None);
    let first = enrich::enrich(&data, &template, &c, &out, &quiet(2)).unwrap();
    assert_eq!((first.succeeded, first.redone), (3, 0));
    assert_eq!(usable(&out).usable, 2);
    // A plain re-run keeps every answer, usable or not.
    let again = enrich::enrich(&data, &template, &c, &out, &quiet(2)).unwrap();
    assert_eq!((again.already_done, again.requested), (3, 0));
    // Asked to redo the unusable ones: only the lamp is asked again, and its new line wins.
    let redo = EnrichOptions {
        redo_unusable: true,
        ..quiet(2)
    };
    let third = enrich::enrich(&data, &template, &c, &out, &redo).unwrap();
    assert_eq!(
        (third.already_done, third.requested, third.redone),
        (2, 1, 1)
    );
    assert_eq!(server.prompts_for("Long desk lamp"), 2);
    assert_eq!(server.prompts_for("Ink"), 1);
    assert!(
        third.to_string().contains("1 of them asked again"),
        "{third}"
    );
    let report = usable(&out);
    assert_eq!((report.items, report.usable), (3, 3));
    assert_eq!(read_records(&out).unwrap().len(), 4);
    // Nothing unusable is left: redoing again asks nothing.
    let fourth = enrich::enrich(&data, &template, &c, &out, &redo).unwrap();
    assert_eq!((fourth.already_done, fourth.requested), (3, 0));
}

#[test]
fn a_dead_endpoint_stops_the_run_with_every_failure_recorded() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let data = dataset(&["A", "B", "C", "D", "E", "F"].map(Some));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("enriched.jsonl");
    let summary = enrich::enrich(
        &data,
        &PromptTemplate::paper(),
        &client(&url),
        &out,
        &EnrichOptions {
            max_consecutive_failures: 2,
            ..quiet(1)
        },
    )
    .unwrap();
    assert!(summary.stopped.is_some(), "{summary}");
    // Stopped after two failures in a row (an item already taken may still finish).
    assert!((2..6).contains(&summary.failed), "{summary}");
    let records = read_records(&out).unwrap();
    assert_eq!(records.len(), summary.failed);
    assert!(
        records
            .iter()
            .all(|r| r.text.is_none() && r.error.is_some())
    );
    assert!(
        !std::fs::read_to_string(&out)
            .unwrap()
            .contains("sk-test-secret")
    );
}

#[test]
fn bad_templates_and_corrupt_outputs_are_named() {
    let err = PromptTemplate::new("Describe {name}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("{title}"), "{err}");
    let err = PromptTemplate::new("Describe {title} for {persona}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("{persona}"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompt.txt");
    std::fs::write(&path, "Describe {titel}\n").unwrap();
    let err = PromptTemplate::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("prompt.txt"), "{err}");
    std::fs::write(&path, "Items of {domain}: {title}. Known: {attributes}\n").unwrap();
    let t = PromptTemplate::from_file(&path).unwrap();
    assert_eq!(
        t.render("Food", "Tea &amp; cups", "green"),
        "Items of Food: Tea & cups. Known: green"
    );

    let out = dir.path().join("enriched.jsonl");
    std::fs::write(&out, "{\"item_id\": 0, \"domain\": \"Art\", \"title\": \"A\", \"text\": \"x\", \"model\": \"m\", \"prompt_hash\": \"1\"}\nnot json\n{}\n").unwrap();
    let err = read_records(&out).unwrap_err().to_string();
    assert!(err.contains("enriched.jsonl:2"), "{err}");
}
