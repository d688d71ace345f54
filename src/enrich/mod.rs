//! LLM enrichment of item text (Section 3.3 of the paper): each item's domain and title go to a
//! chat LLM with a fixed template; the generated context is later embedded with the title
//! (`llm-emf embed --text-source FILE`).
//!
//! Output: one JSON line per item, `{item_id, domain, title, text, model, prompt_hash}`, or
//! `{..., error}` when the item failed for good. Lines are appended one `write` at a time by a
//! single writer, so a crash loses at most the line in flight (a torn last line is cut off on
//! the next run). Re-running skips items that already have text for the same prompt hash (the
//! hash of the rendered prompt and the model name), so changing the template or the model
//! re-enriches everything, and failed items are tried again. With
//! [`EnrichOptions::redo_unusable`], items whose latest answer [`quality::judge`] finds unusable
//! are asked again too (typically with a larger token cap); the new line is appended and, as
//! the latest text of its item, is the one every reader takes.

pub mod client;
pub mod quality;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use client::{CallError, ChatClient, ClientConfig, strip_think};
pub use quality::{QualityReport, Unusable};

use crate::data::{Dataset, ItemId};
use crate::error::{Error, Result};

/// The paper's template (Section 3.3), with `{domain}` and `{title}` placeholders.
pub const PAPER_TEMPLATE: &str = "Generate additional contextual information for an item which is type of {domain} with {title}. Provide detailed insights and keywords about the item's features. The output should include specific attributes, and potential users that could enhance the understanding of the item in a cross-domain recommendation context.";

const PLACEHOLDERS: [&str; 3] = ["domain", "title", "attributes"];

/// A prompt template with `{domain}`, `{title}` and `{attributes}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    text: String,
}

impl Default for PromptTemplate {
    fn default() -> Self {
        Self::paper()
    }
}

impl PromptTemplate {
    /// The paper's template.
    pub fn paper() -> Self {
        Self {
            text: PAPER_TEMPLATE.to_string(),
        }
    }

    /// A template from a string; it must use `{title}` and no unknown placeholder.
    pub fn new(text: &str) -> Result<Self> {
        Self::check(text).map_err(Error::Config)?;
        Ok(Self {
            text: text.to_string(),
        })
    }

    /// A template from a file (trailing newlines dropped); errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::io::read_text(path)?;
        let text = text.trim_end_matches(['\n', '\r']);
        Self::check(text).map_err(|m| Error::format(path, m))?;
        Ok(Self {
            text: text.to_string(),
        })
    }

    fn check(text: &str) -> std::result::Result<(), String> {
        if !text.contains("{title}") {
            return Err("the prompt template must contain {title}".into());
        }
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let name = &after[..close];
            if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !PLACEHOLDERS.contains(&name)
            {
                return Err(format!(
                    "unknown placeholder {{{name}}} in the prompt template (known: {{domain}}, {{title}}, {{attributes}})"
                ));
            }
            rest = &after[close + 1..];
        }
        Ok(())
    }

    /// The template text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The prompt of one item (titles are HTML-unescaped first: `&amp;` becomes `&`).
    pub fn render(&self, domain: &str, title: &str, attributes: &str) -> String {
        self.text
            .replace("{domain}", domain)
            .replace("{title}", &crate::features::text::clean_text(title))
            .replace("{attributes}", attributes)
    }
}

/// 16 hex digits identifying a prompt sent to a model (64-bit FNV-1a).
pub fn prompt_hash(prompt: &str, model: &str) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in prompt.bytes().chain([0u8]).chain(model.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// One line of the output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichRecord {
    /// Global item id.
    pub item_id: ItemId,
    /// Domain name.
    pub domain: String,
    /// Title as in the dataset.
    pub title: String,
    /// The generated context (absent when the item failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Why the item failed (absent on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Model name.
    pub model: String,
    /// [`prompt_hash`] of the prompt and model.
    pub prompt_hash: String,
    /// Requests made for this item.
    #[serde(default)]
    pub tries: usize,
}

/// How to run [`enrich`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichOptions {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Most items to request in this run (`None`: all).
    pub limit: Option<usize>,
    /// Show a progress bar.
    pub progress: bool,
    /// Stop taking new items after this many failures in a row (the endpoint is likely down);
    /// 0 never stops.
    pub max_consecutive_failures: usize,
    /// Ask again the items whose latest answer under the same prompt hash is unusable
    /// ([`quality::judge`]: too few words besides the title's, looping, the prompt echoed).
    pub redo_unusable: bool,
}

impl Default for EnrichOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            limit: None,
            progress: true,
            max_consecutive_failures: 20,
            redo_unusable: false,
        }
    }
}

/// What [`enrich`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichSummary {
    /// Items in the dataset.
    pub items: usize,
    /// Items skipped for having no title.
    pub without_title: usize,
    /// Items already enriched with the same prompt hash by an earlier run.
    pub already_done: usize,
    /// Items asked again because their earlier answer was unusable
    /// ([`EnrichOptions::redo_unusable`]); counted in `requested` too, not in `already_done`.
    #[serde(default)]
    pub redone: usize,
    /// Items requested in this run.
    pub requested: usize,
    /// Items that got text in this run.
    pub succeeded: usize,
    /// Items that failed for good in this run (recorded with their error).
    pub failed: usize,
    /// Requests made (retries included).
    pub requests: usize,
    /// Wall-clock seconds of this run.
    pub seconds: f64,
    /// Items finished (succeeded or failed) per second.
    pub items_per_second: f64,
    /// Why the run stopped before its work list ended, if it did.
    pub stopped: Option<String>,
}

impl std::fmt::Display for EnrichSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} items: {} enriched now, {} failed, {} already done, {} without title; {} requests in {:.1} s ({:.2} items/s)",
            self.items,
            self.succeeded,
            self.failed,
            self.already_done,
            self.without_title,
            self.requests,
            self.seconds,
            self.items_per_second
        )?;
        if self.redone > 0 {
            writeln!(
                f,
                "{} of them asked again for an unusable earlier answer",
                self.redone
            )?;
        }
        if let Some(why) = &self.stopped {
            writeln!(f, "stopped early: {why}")?;
        }
        Ok(())
    }
}

/// Reads an enrichment file, cutting off a torn last line (a crash mid-write). Malformed lines
/// elsewhere are an error naming the line.
pub fn read_records(path: &Path) -> Result<Vec<EnrichRecord>> {
    let mut raw = match std::fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    if !raw.is_empty() && raw.last() != Some(&b'\n') {
        let keep = raw.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.set_len(keep as u64).map_err(|e| Error::io(path, e))?;
        raw.truncate(keep);
    }
    let text = String::from_utf8(raw).map_err(|_| Error::format(path, "not UTF-8 text"))?;
    let mut out = Vec::new();
    for (line, s) in crate::io::numbered_lines(&text) {
        if s.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(s)
                .map_err(|e| Error::parse(path, line, format!("not an enrichment record: {e}")))?,
        );
    }
    Ok(out)
}

struct Work {
    item: ItemId,
    domain: String,
    title: String,
    prompt: String,
    hash: String,
    /// Asked again for an unusable earlier answer.
    redo: bool,
}

/// Enriches the items of `dataset` into `out` (appending; see the module docs).
pub fn enrich(
    dataset: &Dataset,
    template: &PromptTemplate,
    client: &ChatClient,
    out: &Path,
    options: &EnrichOptions,
) -> Result<EnrichSummary> {
    if options.concurrency == 0 {
        return Err(Error::Config("enrichment needs concurrency >= 1".into()));
    }
    let model = client.config().model.clone();
    // The latest text of each (item, prompt hash): what every reader of the file takes.
    let mut done: HashMap<(ItemId, String), String> = HashMap::new();
    for r in read_records(out)? {
        if let Some(text) = r.text {
            done.insert((r.item_id, r.prompt_hash), text);
        }
    }
    let mut work = Vec::new();
    let (mut without_title, mut already_done) = (0, 0);
    for (id, item) in dataset.items().iter().enumerate() {
        let id = id as ItemId;
        let Some(title) = item.title.as_deref().filter(|t| !t.trim().is_empty()) else {
            without_title += 1;
            continue;
        };
        let domain = dataset
            .domain_of(id)
            .map(|d| dataset.domain(d).name.clone())
            .unwrap_or_default();
        let prompt = template.render(&domain, title, item.attributes.as_deref().unwrap_or(""));
        let hash = prompt_hash(&prompt, &model);
        let earlier = done.get(&(id, hash.clone()));
        let redo = options.redo_unusable
            && earlier.is_some_and(|text| quality::judge(Some(text), title, &prompt).is_some());
        if earlier.is_some() && !redo {
            already_done += 1;
            continue;
        }
        work.push(Work {
            item: id,
            domain,
            title: title.to_string(),
            prompt,
            hash,
            redo,
        });
    }
    if let Some(limit) = options.limit {
        work.truncate(limit);
    }
    let redone = work.iter().filter(|w| w.redo).count();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| Error::io(out, e))?;

    let bar = crate::progress::Bar::units(options.progress, work.len() as u64, "items");
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut summary = EnrichSummary {
        items: dataset.items().len(),
        without_title,
        already_done,
        redone,
        requested: 0,
        succeeded: 0,
        failed: 0,
        requests: 0,
        seconds: 0.0,
        items_per_second: 0.0,
        stopped: None,
    };
    let mut write_error = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<EnrichRecord>();
        for _ in 0..options.concurrency.min(work.len().max(1)) {
            let tx = tx.clone();
            let (next, stop, work, model) = (&next, &stop, &work, &model);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(w) = work.get(i) else { break };
                    let (result, tries) = client.complete(&w.prompt, u64::from(w.item));
                    let (text, error) = match result {
                        Ok(t) => (Some(t), None),
                        Err(e) => (None, Some(e.message)),
                    };
                    let record = EnrichRecord {
                        item_id: w.item,
                        domain: w.domain.clone(),
                        title: w.title.clone(),
                        text,
                        error,
                        model: model.clone(),
                        prompt_hash: w.hash.clone(),
                        tries,
                    };
                    if tx.send(record).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut consecutive = 0;
        for record in rx {
            summary.requested += 1;
            summary.requests += record.tries;
            if record.text.is_some() {
                summary.succeeded += 1;
                consecutive = 0;
            } else {
                summary.failed += 1;
                consecutive += 1;
                bar.set_message(format!(
                    "last error: {}",
                    record.error.as_deref().unwrap_or("")
                ));
                if options.max_consecutive_failures > 0
                    && consecutive >= options.max_consecutive_failures
                    && summary.stopped.is_none()
                {
                    stop.store(true, Ordering::Relaxed);
                    summary.stopped = Some(format!(
                        "{consecutive} items failed in a row, last: {}",
                        record.error.as_deref().unwrap_or("")
                    ));
                }
            }
            let mut line = serde_json::to_string(&record).expect("records serialise");
            line.push('\n');
            if let Err(e) = file.write_all(line.as_bytes()).and_then(|_| file.flush()) {
                stop.store(true, Ordering::Relaxed);
                write_error.get_or_insert(Error::io(out, e));
            }
            bar.inc(1);
        }
    });
    bar.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e);
    }
    summary.seconds = start.elapsed().as_secs_f64();
    summary.items_per_second = summary.requested as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}
