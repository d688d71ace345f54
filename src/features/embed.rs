//! Turning every item of a dataset into a row of a feature matrix with a frozen encoder: batched,
//! with a progress bar, resumable after a kill, in global item-id order.
//!
//! Rows go to `OUT.partial` (raw little-endian float32, appended batch by batch) described by
//! `OUT.partial.json`; a re-run with the same job resumes after the last whole row. The finished
//! matrix is written to `OUT` atomically (`.npy`) and the partial files are removed.
//!
//! Fallbacks: an item without text (no title and no enriched text) or without a readable image
//! gets an all-zero row, which the model treats as "no feature" (a zero vector is neutral in
//! every cosine). Such items are counted, and unreadable images are listed, in the report.

use std::collections::HashMap;
use std::io::{Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

#[cfg(feature = "encoders")]
use super::bert::SentenceEncoder;
#[cfg(feature = "encoders")]
use super::clip::ClipEmbedder;
use super::matrix::FeatureMatrix;
use crate::data::{Dataset, Item, ItemId};
use crate::error::{Error, Result};

/// A frozen text encoder.
pub trait TextEmbed {
    /// Output width.
    fn dim(&self) -> usize;
    /// Embeds `texts`: `[texts.len(), dim]` row-major.
    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>>;
}

#[cfg(feature = "encoders")]
impl TextEmbed for SentenceEncoder {
    fn dim(&self) -> usize {
        SentenceEncoder::dim(self)
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        self.encode(texts)
    }
}

#[cfg(feature = "encoders")]
impl TextEmbed for ClipEmbedder {
    fn dim(&self) -> usize {
        ClipEmbedder::dim(self)
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        self.encode_texts(texts)
    }
}

/// Where item text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextSource {
    /// The dataset's titles.
    Titles,
    /// Titles followed by the LLM-enriched text of a JSON-lines file (`{"item_id": N, "text":
    /// "..."}` per line, as written by `llm-emf enrich`; lines without `text` are skipped).
    Enriched(PathBuf),
}

#[derive(Deserialize)]
struct EnrichedLine {
    item_id: ItemId,
    #[serde(default)]
    text: Option<String>,
}

/// Item texts and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemTexts {
    /// One text per item, in global id order (`None`: nothing to embed).
    pub texts: Vec<Option<String>>,
    /// Items with an enriched text.
    pub enriched: usize,
}

/// Reads enriched texts (item id to text; a later line for the same item wins).
pub fn read_enriched(path: &Path, num_items: usize) -> Result<HashMap<ItemId, String>> {
    let text = crate::io::read_text(path)?;
    let mut out = HashMap::new();
    for (line, raw) in crate::io::numbered_lines(&text) {
        if raw.trim().is_empty() {
            continue;
        }
        let rec: EnrichedLine = serde_json::from_str(raw)
            .map_err(|e| Error::parse(path, line, format!("not an enrichment record: {e}")))?;
        if rec.item_id as usize >= num_items {
            return Err(Error::parse(
                path,
                line,
                format!(
                    "item {} is not in the dataset ({num_items} items)",
                    rec.item_id
                ),
            ));
        }
        if let Some(t) = rec.text.filter(|t| !t.trim().is_empty()) {
            out.insert(rec.item_id, t);
        }
    }
    Ok(out)
}

/// The text of one item: its title (and attributes when `with_attributes`), then `extra` (an
/// enriched text); `None` when there is nothing.
pub fn item_text(item: &Item, with_attributes: bool, extra: Option<&str>) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    if let Some(t) = item.title.as_deref().filter(|t| !t.trim().is_empty()) {
        parts.push(t);
    }
    if with_attributes && let Some(a) = item.attributes.as_deref() {
        parts.push(a);
    }
    parts.extend(extra);
    (!parts.is_empty()).then(|| parts.join(". "))
}

/// The text of every item: its title (and attributes when `with_attributes`), then its enriched
/// text when the source has one.
pub fn item_texts(
    dataset: &Dataset,
    source: &TextSource,
    with_attributes: bool,
) -> Result<ItemTexts> {
    let enriched = match source {
        TextSource::Titles => HashMap::new(),
        TextSource::Enriched(path) => read_enriched(path, dataset.items().len())?,
    };
    let texts = dataset
        .items()
        .iter()
        .enumerate()
        .map(|(id, item)| {
            item_text(
                item,
                with_attributes,
                enriched.get(&(id as ItemId)).map(String::as_str),
            )
        })
        .collect();
    Ok(ItemTexts {
        texts,
        enriched: enriched.len(),
    })
}

/// The image file of each item in `dir`: `{item_id}.{ext}`, else `{key}.{ext}` for items with a
/// source key (RecBole tokens such as ASINs), `ext` one of jpg, jpeg, png, webp, gif, bmp.
pub fn item_images(dir: &Path, dataset: &Dataset) -> Result<Vec<Option<PathBuf>>> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "image folder not found"),
        ));
    }
    const EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "JPG"];
    let find = |stem: &str| {
        EXTENSIONS
            .iter()
            .map(|ext| dir.join(format!("{stem}.{ext}")))
            .find(|p| p.is_file())
    };
    Ok(dataset
        .items()
        .iter()
        .enumerate()
        .map(|(id, item)| {
            find(&id.to_string()).or_else(|| {
                item.key
                    .as_deref()
                    .filter(|k| !k.is_empty() && !k.contains(['/', '\\']) && !k.starts_with('.'))
                    .and_then(find)
            })
        })
        .collect())
}

/// What an embedding job did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedReport {
    /// Rows of the matrix (items).
    pub rows: usize,
    /// Width.
    pub dim: usize,
    /// Rows embedded from an input.
    pub embedded: usize,
    /// Rows left at zero because the item had no input.
    pub without_input: usize,
    /// Rows left at zero because the input could not be read (item id, reason).
    pub failed: Vec<(ItemId, String)>,
    /// Rows found done from an earlier, interrupted run.
    pub resumed_rows: usize,
    /// Seconds spent encoding in this run.
    pub seconds: f64,
    /// Rows encoded per second in this run.
    pub rows_per_second: f64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct PartialMeta {
    job: String,
    rows: usize,
    dim: usize,
    failed: Vec<(ItemId, String)>,
}

fn sidecar(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A resumable job writing a `[rows, dim]` matrix to `out`.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    /// The finished matrix (`.npy`).
    pub out: PathBuf,
    /// Rows (items).
    pub rows: usize,
    /// Width.
    pub dim: usize,
    /// Identifies the job (encoder, weights, text source...): partial rows of another job are
    /// discarded instead of resumed.
    pub job: String,
    /// Rows per encoder call.
    pub batch_size: usize,
    /// Show a progress bar.
    pub progress: bool,
}

/// What [`EmbedJob::run`] produced.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// The finished matrix.
    pub matrix: FeatureMatrix,
    /// Rows an earlier, interrupted run had finished.
    pub resumed_rows: usize,
    /// Rows left at zero because their input could not be read (item id, reason).
    pub failed: Vec<(ItemId, String)>,
    /// Seconds spent encoding in this run.
    pub seconds: f64,
}

/// What a batch produced: its rows, and the rows left at zero because their input failed.
pub struct Batch {
    /// `[range.len(), dim]` row-major.
    pub data: Vec<f32>,
    /// Rows (global) left at zero, with the reason.
    pub failed: Vec<(ItemId, String)>,
}

impl EmbedJob {
    /// The partial-rows file.
    pub fn partial_path(&self) -> PathBuf {
        sidecar(&self.out, ".partial")
    }

    fn meta_path(&self) -> PathBuf {
        sidecar(&self.out, ".partial.json")
    }

    /// Runs the job: `encode(range)` produces the rows of `range`.
    pub fn run(&self, mut encode: impl FnMut(Range<usize>) -> Result<Batch>) -> Result<JobOutcome> {
        if self.dim == 0 || self.batch_size == 0 {
            return Err(Error::Config(
                "embedding needs dim > 0 and batch size > 0".into(),
            ));
        }
        let row_bytes = (self.dim * 4) as u64;
        let partial = self.partial_path();
        let meta_path = self.meta_path();
        let mut meta = PartialMeta {
            job: self.job.clone(),
            rows: self.rows,
            dim: self.dim,
            failed: Vec::new(),
        };
        let mut done = 0usize;
        if let (Ok(old), Ok(file_meta)) = (
            crate::io::read_json::<PartialMeta>(&meta_path),
            std::fs::metadata(&partial),
        ) && old.job == meta.job
            && old.rows == meta.rows
            && old.dim == meta.dim
        {
            done = ((file_meta.len() / row_bytes) as usize).min(self.rows);
            meta.failed = old.failed;
            meta.failed.retain(|(id, _)| (*id as usize) < done);
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial)
            .map_err(|e| Error::io(&partial, e))?;
        // Drop a torn last row (a kill mid-write) and anything of another job.
        file.set_len(done as u64 * row_bytes)
            .map_err(|e| Error::io(&partial, e))?;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(|e| Error::io(&partial, e))?;
        crate::io::write_json(&meta_path, &meta)?;

        let bar = crate::progress::Bar::units(self.progress, self.rows as u64, "items");
        bar.set_position(done as u64);
        let resumed = done;
        let start = Instant::now();
        while done < self.rows {
            let range = done..(done + self.batch_size).min(self.rows);
            let n = range.len();
            let batch = encode(range.clone())?;
            if batch.data.len() != n * self.dim {
                return Err(Error::InvalidInput(format!(
                    "the encoder returned {} values for {n} rows of width {}",
                    batch.data.len(),
                    self.dim
                )));
            }
            let bytes: Vec<u8> = batch.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            file.write_all(&bytes).map_err(|e| Error::io(&partial, e))?;
            file.flush().map_err(|e| Error::io(&partial, e))?;
            if !batch.failed.is_empty() {
                meta.failed.extend(batch.failed);
                crate::io::write_json(&meta_path, &meta)?;
            }
            done += n;
            bar.set_position(done as u64);
        }
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        drop(file);
        let raw = std::fs::read(&partial).map_err(|e| Error::io(&partial, e))?;
        let data: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let matrix = FeatureMatrix::new(self.rows, self.dim, data)?;
        matrix.save_npy(&self.out)?;
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&meta_path);
        Ok(JobOutcome {
            matrix,
            resumed_rows: resumed,
            failed: meta.failed,
            seconds,
        })
    }
}

fn report(outcome: JobOutcome, without_input: usize) -> (FeatureMatrix, EmbedReport) {
    let rows = outcome.matrix.rows();
    let report = EmbedReport {
        rows,
        dim: outcome.matrix.dim(),
        embedded: rows - without_input - outcome.failed.len(),
        without_input,
        failed: outcome.failed,
        resumed_rows: outcome.resumed_rows,
        seconds: outcome.seconds,
        rows_per_second: (rows - outcome.resumed_rows) as f64 / outcome.seconds.max(1e-9),
    };
    (outcome.matrix, report)
}

/// Embeds one text per row (`None`: a zero row) with `encoder` into `job.out`. Within each of
/// the job's batches, texts are sorted by length and sent `encoder_batch` at a time, so rows of
/// similar length are padded together.
pub fn embed_texts(
    job: &EmbedJob,
    texts: &[Option<String>],
    encoder: &dyn TextEmbed,
    encoder_batch: usize,
) -> Result<(FeatureMatrix, EmbedReport)> {
    let dim = encoder.dim();
    let encoder_batch = encoder_batch.max(1);
    let outcome = job.run(|range| {
        let mut data = vec![0.0f32; range.len() * dim];
        let mut present: Vec<(usize, &str)> = range
            .clone()
            .enumerate()
            .filter_map(|(i, r)| texts[r].as_deref().map(|t| (i, t)))
            .collect();
        present.sort_by_key(|(_, t)| t.len());
        for chunk in present.chunks(encoder_batch) {
            let refs: Vec<&str> = chunk.iter().map(|(_, t)| *t).collect();
            let out = encoder.embed(&refs)?;
            for ((i, _), row) in chunk.iter().zip(out.chunks_exact(dim)) {
                data[i * dim..(i + 1) * dim].copy_from_slice(row);
            }
        }
        Ok(Batch {
            data,
            failed: Vec::new(),
        })
    })?;
    let without = texts.iter().filter(|t| t.is_none()).count();
    Ok(report(outcome, without))
}

/// Embeds one image per row (`None`: a zero row; an unreadable file: a zero row, reported)
/// with CLIP's vision tower into `job.out`.
#[cfg(feature = "encoders")]
pub fn embed_images(
    job: &EmbedJob,
    images: &[Option<PathBuf>],
    clip: &ClipEmbedder,
) -> Result<(FeatureMatrix, EmbedReport)> {
    let dim = clip.dim();
    let pre = clip.preprocess();
    let outcome = job.run(|range| {
        let mut data = vec![0.0f32; range.len() * dim];
        let mut failed = Vec::new();
        let mut pixels = Vec::new();
        let mut rows = Vec::new();
        for (i, r) in range.clone().enumerate() {
            let Some(path) = &images[r] else { continue };
            match pre.load(path) {
                Ok(p) => {
                    pixels.extend(p);
                    rows.push(i);
                }
                Err(e) => failed.push((r as ItemId, e.to_string())),
            }
        }
        if !rows.is_empty() {
            let out = clip.encode_pixels(pixels, rows.len())?;
            for (i, row) in rows.iter().zip(out.chunks_exact(dim)) {
                data[i * dim..(i + 1) * dim].copy_from_slice(row);
            }
        }
        Ok(Batch { data, failed })
    })?;
    let without = images.iter().filter(|p| p.is_none()).count();
    Ok(report(outcome, without))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting;
    impl TextEmbed for Counting {
        fn dim(&self) -> usize {
            2
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
            Ok(texts.iter().flat_map(|t| [t.len() as f32, 1.0]).collect())
        }
    }

    fn job(dir: &Path, rows: usize) -> EmbedJob {
        EmbedJob {
            out: dir.join("text.npy"),
            rows,
            dim: 2,
            job: "counting".into(),
            batch_size: 2,
            progress: false,
        }
    }

    #[test]
    fn rows_follow_item_order_and_missing_text_is_a_zero_row() {
        let dir = tempfile::tempdir().unwrap();
        // Longest first, so sorting by length inside the batch reorders the encoder's input.
        let texts = vec![Some("abcd".to_string()), None, Some("ab".to_string())];
        let whole_batch = EmbedJob {
            batch_size: 3,
            ..job(dir.path(), 3)
        };
        let (m, report) = embed_texts(&whole_batch, &texts, &Counting, 2).unwrap();
        assert_eq!(m.data(), &[4.0, 1.0, 0.0, 0.0, 2.0, 1.0]);
        assert_eq!(
            (report.embedded, report.without_input, report.resumed_rows),
            (2, 1, 0)
        );
        let loaded = FeatureMatrix::load(&dir.path().join("text.npy"), Some(3)).unwrap();
        assert_eq!(loaded.data(), m.data());
        assert!(!job(dir.path(), 3).partial_path().exists());
    }

    #[test]
    fn a_killed_job_resumes_after_its_last_whole_row() {
        let dir = tempfile::tempdir().unwrap();
        let texts: Vec<Option<String>> = (1..=5).map(|n| Some("x".repeat(n))).collect();
        let j = job(dir.path(), 5);
        // First run dies in its second batch.
        let mut calls = 0;
        let err = j.run(|range| {
            calls += 1;
            if calls == 2 {
                return Err(Error::InvalidInput("killed".into()));
            }
            let data = range.clone().flat_map(|r| [r as f32 + 1.0, 1.0]).collect();
            Ok(Batch {
                data,
                failed: vec![],
            })
        });
        assert!(err.is_err());
        // A torn half row at the end, as a kill mid-write leaves.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(j.partial_path())
            .unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);
        let (m, report) = embed_texts(&j, &texts, &Counting, 2).unwrap();
        assert_eq!(report.resumed_rows, 2);
        assert_eq!(
            m.data(),
            &[1.0, 1.0, 2.0, 1.0, 3.0, 1.0, 4.0, 1.0, 5.0, 1.0]
        );

        // Partial rows of another job are not reused.
        let other = EmbedJob {
            job: "other".into(),
            ..job(dir.path(), 5)
        };
        std::fs::write(other.partial_path(), [0u8; 16]).unwrap();
        crate::io::write_json(
            &sidecar(&other.out, ".partial.json"),
            &PartialMeta {
                job: "counting".into(),
                rows: 5,
                dim: 2,
                failed: vec![],
            },
        )
        .unwrap();
        let (_, report) = embed_texts(&other, &texts, &Counting, 3).unwrap();
        assert_eq!(report.resumed_rows, 0);
    }

    #[test]
    fn images_are_found_by_item_id_or_source_key() {
        use crate::data::{Domain, Item, TrainingData};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0.png"), b"x").unwrap();
        std::fs::write(dir.path().join("B00ASIN.jpg"), b"x").unwrap();
        let item = |key: &str| Item {
            title: None,
            attributes: None,
            key: Some(key.to_string()),
        };
        let domain = |name: &str, start, len| Domain {
            name: name.into(),
            start,
            len,
        };
        let ds = Dataset::new(
            "t",
            [domain("A", 0, 2), domain("B", 2, 1)],
            vec![item("zzz"), item("B00ASIN"), item("../0")],
            TrainingData::Present(vec![]),
            vec![],
            vec![],
        )
        .unwrap();
        let found = item_images(dir.path(), &ds).unwrap();
        assert_eq!(found[0], Some(dir.path().join("0.png")));
        assert_eq!(found[1], Some(dir.path().join("B00ASIN.jpg")));
        assert_eq!(found[2], None, "keys never leave the folder");
        let err = item_images(&dir.path().join("nowhere"), &ds)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nowhere"), "{err}");
    }

    #[test]
    fn enriched_text_files_are_checked_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enriched.jsonl");
        std::fs::write(
            &path,
            "{\"item_id\": 1, \"text\": \"old\"}\n\n{\"item_id\": 0, \"error\": \"HTTP 400\"}\n{\"item_id\": 1, \"text\": \"new\"}\n",
        )
        .unwrap();
        let map = read_enriched(&path, 3).unwrap();
        assert_eq!(map.len(), 1);
        assert_eq!(map[&1], "new");
        std::fs::write(
            &path,
            "{\"item_id\": 1, \"text\": \"a\"}\n{\"item_id\": 7, \"text\": \"b\"}\n",
        )
        .unwrap();
        let err = read_enriched(&path, 3).unwrap_err().to_string();
        assert!(
            err.contains("enriched.jsonl:2") && err.contains("item 7"),
            "{err}"
        );
        std::fs::write(&path, "{\"item_id\": 1, \"text\": \"a\"}\nnot json\n").unwrap();
        let err = read_enriched(&path, 3).unwrap_err().to_string();
        assert!(err.contains("enriched.jsonl:2"), "{err}");
    }
}
