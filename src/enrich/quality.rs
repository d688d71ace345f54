//! Checking an enrichment file the way a reviewer would: is each answer usable text about its
//! item, and how long are the answers (in words, and in the text encoder's tokens when a
//! tokenizer is given)?
//!
//! An answer is usable when it is non-empty, has at least [`MIN_WORDS`] words besides the
//! words of the item's title, is not stuck repeating itself, and does not echo the prompt.
//! Each item's record is the one `embed --text-source` reads: its latest text, or its latest
//! failure when it has none.

use std::collections::{HashMap, HashSet};
#[cfg(feature = "encoders")]
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{EnrichRecord, PromptTemplate};
use crate::data::ItemId;

/// Fewest words an answer needs besides its title's to be usable.
pub const MIN_WORDS: usize = 10;

/// Why an answer is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unusable {
    /// The item failed for good (the record holds an error, no text).
    Failed,
    /// The answer is empty or whitespace.
    Empty,
    /// The answer repeats the prompt (or a sentence-long part of it) instead of answering.
    Prompt,
    /// The answer is the title again, or the title and fewer than [`MIN_WORDS`] other words.
    Title,
    /// Fewer than [`MIN_WORDS`] words.
    TooShort,
    /// Stuck in a loop: fewer than a third of its words are distinct.
    Repetitive,
}

impl Unusable {
    /// Every reason, in the order reports list them.
    pub const ALL: [Unusable; 6] = [
        Unusable::Failed,
        Unusable::Empty,
        Unusable::Prompt,
        Unusable::Title,
        Unusable::TooShort,
        Unusable::Repetitive,
    ];
}

/// Lowercase alphanumeric words of a text.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `answer` is a usable enrichment of an item titled `title` asked with `prompt`; the
/// reason when it is not.
pub fn judge(answer: Option<&str>, title: &str, prompt: &str) -> Option<Unusable> {
    let Some(answer) = answer else {
        return Some(Unusable::Failed);
    };
    let answer_words = words(answer);
    if answer_words.is_empty() {
        return Some(Unusable::Empty);
    }
    let title_set: HashSet<String> = words(title).into_iter().collect();
    let other = answer_words
        .iter()
        .filter(|w| !title_set.contains(*w))
        .count();
    if other < MIN_WORDS {
        return Some(if other == 0 || answer_words.len() >= MIN_WORDS {
            Unusable::Title
        } else {
            Unusable::TooShort
        });
    }
    let distinct: HashSet<&String> = answer_words.iter().collect();
    if 3 * distinct.len() < answer_words.len() {
        return Some(Unusable::Repetitive);
    }
    // Echoing the prompt: the answer's words all come from the prompt, or the answer
    // contains the prompt's longest sentence word for word.
    let prompt_words = words(prompt);
    let prompt_set: HashSet<&str> = prompt_words.iter().map(String::as_str).collect();
    let joined = format!(" {} ", answer_words.join(" "));
    let longest_sentence = prompt
        .split(['.', '?', '!', '\n'])
        .map(words)
        .max_by_key(Vec::len)
        .unwrap_or_default();
    if answer_words.iter().all(|w| prompt_set.contains(w.as_str()))
        || (longest_sentence.len() >= 6
            && joined.contains(&format!(" {} ", longest_sentence.join(" "))))
    {
        return Some(Unusable::Prompt);
    }
    None
}

/// Spread of a list of lengths.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Lengths {
    /// Shortest.
    pub min: usize,
    /// 10th percentile.
    pub p10: usize,
    /// Median.
    pub median: usize,
    /// 90th percentile.
    pub p90: usize,
    /// Longest.
    pub max: usize,
    /// Mean.
    pub mean: f64,
}

impl Lengths {
    /// The spread of `values` (all zero when empty).
    pub fn of(mut values: Vec<usize>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Self {
            min: values[0],
            p10: at(0.1),
            median: at(0.5),
            p90: at(0.9),
            max: values[values.len() - 1],
            mean: values.iter().sum::<usize>() as f64 / values.len() as f64,
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Items with a record (the latest of each counts).
    pub items: usize,
    /// Items whose answer is usable.
    pub usable: usize,
    /// Unusable items by reason, in [`Unusable::ALL`]'s order (reasons with no item left out).
    pub unusable: Vec<(Unusable, usize)>,
    /// Words per answer (answers with text).
    pub words: Lengths,
    /// Word-piece tokens of the text the encoder reads (`title. answer`), when counted.
    pub tokens: Option<Lengths>,
    /// Items whose `title. answer` is longer than the encoder's token limit, and that limit.
    pub truncated: Option<(usize, usize)>,
    /// Up to five unusable items with their reason, for a look.
    pub examples: Vec<(ItemId, Unusable, String)>,
}

impl QualityReport {
    /// Share of items with a usable answer (0 when there is none).
    pub fn usable_share(&self) -> f64 {
        if self.items == 0 {
            0.0
        } else {
            self.usable as f64 / self.items as f64
        }
    }
}

impl std::fmt::Display for QualityReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} items: {} usable ({:.1}%)",
            self.items,
            self.usable,
            100.0 * self.usable_share()
        )?;
        for (why, n) in &self.unusable {
            writeln!(f, "  unusable, {why:?}: {n}")?;
        }
        let w = &self.words;
        writeln!(
            f,
            "words per answer: min {}, p10 {}, median {}, p90 {}, max {}, mean {:.1}",
            w.min, w.p10, w.median, w.p90, w.max, w.mean
        )?;
        if let Some(t) = &self.tokens {
            write!(
                f,
                "encoder tokens of title + answer: min {}, p10 {}, median {}, p90 {}, max {}, mean {:.1}",
                t.min, t.p10, t.median, t.p90, t.max, t.mean
            )?;
            if let Some((n, limit)) = self.truncated {
                write!(f, "; {n} items over the {limit}-token limit (cut there)")?;
            }
            writeln!(f)?;
        }
        for (item, why, text) in &self.examples {
            let short: String = text.chars().take(120).collect();
            writeln!(f, "  e.g. item {item} ({why:?}): {short:?}")?;
        }
        Ok(())
    }
}

/// How many tokens a text encoder makes of a text, and how many it reads.
pub trait TokenCount {
    /// Tokens of `text`, special tokens included, before any truncation.
    fn tokens(&self, text: &str) -> usize;
    /// The encoder's context length: tokens past it are cut before encoding.
    fn limit(&self) -> usize;
}

/// The token count of all-MiniLM-L6-v2 (the tokenizer of a weights folder, and the context
/// length `SentenceEncoder` cuts at).
#[cfg(feature = "encoders")]
pub struct EncoderTokens {
    tokenizer: crate::features::tokenize::TextTokenizer,
    limit: usize,
}

#[cfg(feature = "encoders")]
impl EncoderTokens {
    /// From a MiniLM weights folder (`tokenizer.json`, `config.json`); errors name the file.
    pub fn load(dir: &Path) -> crate::error::Result<Self> {
        let limit = crate::features::bert::SentenceEncoder::context_length(dir)?;
        // No truncation here, to see how far past the limit a text goes.
        let tokenizer = crate::features::tokenize::TextTokenizer::bert_from_file(
            &dir.join("tokenizer.json"),
            1 << 20,
        )?;
        Ok(Self { tokenizer, limit })
    }
}

#[cfg(feature = "encoders")]
impl TokenCount for EncoderTokens {
    fn tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text).map_or(0, |ids| ids.len())
    }

    fn limit(&self) -> usize {
        self.limit
    }
}

/// Checks every item of `records` (see the module docs): `template` renders an item's prompt
/// (to catch echoes); `tokens`, when given, counts the encoder's tokens of what it reads.
pub fn check(
    records: &[EnrichRecord],
    template: &PromptTemplate,
    tokens: Option<&dyn TokenCount>,
) -> QualityReport {
    // As `embed --text-source` reads the file: the latest text of an item wins, and a later
    // failure does not erase an earlier text.
    let mut latest: HashMap<ItemId, &EnrichRecord> = HashMap::new();
    for r in records {
        let keep_earlier =
            r.text.is_none() && latest.get(&r.item_id).is_some_and(|e| e.text.is_some());
        if !keep_earlier {
            latest.insert(r.item_id, r);
        }
    }
    let mut items: Vec<&EnrichRecord> = latest.into_values().collect();
    items.sort_by_key(|r| r.item_id);
    let mut counts: HashMap<Unusable, usize> = HashMap::new();
    let (mut usable, mut word_counts, mut token_counts) = (0, Vec::new(), Vec::new());
    let mut examples = Vec::new();
    for r in &items {
        let prompt = template.render(&r.domain, &r.title, "");
        if let Some(text) = &r.text {
            word_counts.push(words(text).len());
            if let Some(count) = tokens {
                // What `embed --text-source` encodes: the title, then the answer.
                token_counts.push(count.tokens(&format!("{}. {text}", r.title)));
            }
        }
        match judge(r.text.as_deref(), &r.title, &prompt) {
            None => usable += 1,
            Some(why) => {
                *counts.entry(why).or_default() += 1;
                if examples.len() < 5 {
                    let shown = r
                        .text
                        .clone()
                        .or_else(|| r.error.clone())
                        .unwrap_or_default();
                    examples.push((r.item_id, why, shown));
                }
            }
        }
    }
    let truncated = tokens.map(|count| {
        let limit = count.limit();
        (token_counts.iter().filter(|&&n| n > limit).count(), limit)
    });
    QualityReport {
        items: items.len(),
        usable,
        unusable: Unusable::ALL
            .into_iter()
            .filter_map(|why| counts.get(&why).map(|&n| (why, n)))
            .collect(),
        words: Lengths::of(word_counts),
        tokens: tokens.map(|_| Lengths::of(token_counts)),
        truncated,
        examples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: ItemId, title: &str, text: Option<&str>) -> EnrichRecord {
        EnrichRecord {
            item_id: id,
            domain: "Food".into(),
            title: title.into(),
            text: text.map(str::to_string),
            error: text.is_none().then(|| "HTTP 500".to_string()),
            model: "m".into(),
            prompt_hash: "h".into(),
            tries: 1,
        }
    }

    const GOOD: &str = "A rich dark roast with notes of cocoa and caramel, suited to espresso \
                        drinkers who like a strong morning cup.";

    #[test]
    fn judges_each_kind_of_answer() {
        let prompt = PromptTemplate::paper().render("Food", "Dark Roast Coffee", "");
        let j = |a: Option<&str>| judge(a, "Dark Roast Coffee", &prompt);
        assert_eq!(j(Some(GOOD)), None);
        assert_eq!(j(None), Some(Unusable::Failed));
        assert_eq!(j(Some("  \n ")), Some(Unusable::Empty));
        assert_eq!(j(Some("Dark roast coffee.")), Some(Unusable::Title));
        assert_eq!(j(Some("Tasty and strong.")), Some(Unusable::TooShort));
        let looping = format!(
            "Dark roast coffee. {}",
            "The best taste the best. ".repeat(8)
        );
        assert_eq!(j(Some(&looping)), Some(Unusable::Repetitive));
        assert_eq!(
            j(Some(
                "Dark Roast Coffee: dark roast coffee, a dark roast coffee and a roast."
            )),
            Some(Unusable::Title)
        );
        // The prompt echoed back, whole or its longest sentence inside other words.
        assert_eq!(j(Some(&prompt)), Some(Unusable::Prompt));
        let echoed = format!(
            "Sure! Provide detailed insights and keywords about the item's features. {GOOD}"
        );
        assert_eq!(
            j(Some(&echoed)),
            None,
            "one short sentence of it is not an echo"
        );
        let longest = "The output should include specific attributes, and potential users that \
                       could enhance the understanding of the item in a cross-domain \
                       recommendation context.";
        assert_eq!(
            j(Some(&format!("{GOOD} {longest}"))),
            Some(Unusable::Prompt)
        );
    }

    /// Counts characters, with a limit.
    struct Chars(usize);

    impl TokenCount for Chars {
        fn tokens(&self, text: &str) -> usize {
            text.len()
        }
        fn limit(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn counts_the_latest_record_of_each_item() {
        let records = vec![
            record(0, "Dark Roast Coffee", None),
            record(1, "Green Tea", Some("Green tea.")),
            record(0, "Dark Roast Coffee", Some(GOOD)),
            record(2, "Cast Iron Pan", Some(GOOD)),
            // A later failure keeps the earlier text, as `embed` reads it.
            record(2, "Cast Iron Pan", None),
        ];
        let report = check(&records, &PromptTemplate::paper(), Some(&Chars(100)));
        assert_eq!(report.items, 3);
        assert_eq!(report.usable, 2);
        assert_eq!(report.unusable, vec![(Unusable::Title, 1)]);
        assert!((report.usable_share() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(report.words.max, words(GOOD).len());
        assert_eq!(report.words.min, 2);
        // "Dark Roast Coffee. " + GOOD is longer than 100 characters; "Green Tea. Green tea." is not.
        assert_eq!(report.truncated, Some((2, 100)));
        assert_eq!(report.examples.len(), 1);
        assert_eq!(report.examples[0].0, 1);
        let shown = report.to_string();
        assert!(shown.contains("3 items: 2 usable (66.7%)"), "{shown}");
        assert!(shown.contains("unusable, Title: 1"), "{shown}");
    }

    #[test]
    fn an_empty_file_reports_nothing_usable() {
        let report = check(&[], &PromptTemplate::paper(), None);
        assert_eq!(report.items, 0);
        assert_eq!(report.usable_share(), 0.0);
        assert_eq!(report.words, Lengths::default());
        assert!(report.tokens.is_none());
    }

    #[test]
    fn lengths_take_percentiles_of_the_sorted_values() {
        let l = Lengths::of((1..=11).rev().collect());
        assert_eq!((l.min, l.p10, l.median, l.p90, l.max), (1, 2, 6, 10, 11));
        assert!((l.mean - 6.0).abs() < 1e-12);
    }
}
