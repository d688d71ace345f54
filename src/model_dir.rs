//! A trained model as a self-contained, versioned folder: what a service loads to answer
//! top-k requests, without the training data, the run folder or any path outside the folder.
//!
//! Layout (format version [`FORMAT_VERSION`], documented in `docs/model-folder.md`):
//!
//! | file | holds |
//! | --- | --- |
//! | `manifest.json` | format name and version, the crate version that wrote it, and each other file's size and SHA-256 |
//! | `model.json` | the model configuration, the score settings chosen on validation, the dataset's name and its two domains (names and id ranges), the feature widths |
//! | `items.jsonl` | one line per item in global id order: id, domain, source key and title where known, training interactions (what the row shrinkage reads) |
//! | `weights.safetensors` | the learned parameters, by module path |
//! | `features.safetensors` | the frozen feature rows the model reads (`image`, `text`), when it reads any |
//! | `added.jsonl` | items added after training ([`add_items`]), one [`NewItem`] per line with its text vector, when there are any |
//!
//! Writing goes to a temporary folder beside the destination, which then replaces it, so a
//! reader never sees a half-written model; loading checks the format version, every file's
//! size and checksum, and that the parts agree (item counts, widths, parameter shapes), and
//! says which file is wrong.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::{Dataset, Domain, DomainId, Item, ItemId, TrainingData};
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;
use crate::model::{Catalogue, ItemFeatures, LlmEmf, ModelConfig, ScoreSettings};
use crate::recommend::{NewItem, Recommender};
use burn::tensor::Device;

/// The `format` of every manifest.
pub const FORMAT: &str = "llm-emf-model";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MANIFEST: &str = "manifest.json";
const MODEL: &str = "model.json";
const ITEMS: &str = "items.jsonl";
const WEIGHTS: &str = "weights.safetensors";
const FEATURES: &str = "features.safetensors";
const ADDED: &str = "added.jsonl";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: String,
    version: u32,
    written_by: String,
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    bytes: u64,
    sha256: String,
}

/// `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    dataset: String,
    domains: [Domain; 2],
    model: ModelConfig,
    score: ScoreSettings,
    feature_widths: FeatureWidths,
}

/// The widths of the frozen feature rows in `features.safetensors`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct FeatureWidths {
    image: Option<usize>,
    text: Option<usize>,
}

/// One line of `items.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemLine {
    id: ItemId,
    domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    train_count: u32,
}

/// Everything a model folder holds, on the host.
#[derive(Debug, Clone)]
pub struct ModelDirParts {
    /// The model configuration.
    pub config: ModelConfig,
    /// The score settings the validation fits chose.
    pub score: ScoreSettings,
    /// The catalogue: the dataset's name, domains and items, without interactions.
    pub catalogue: Dataset,
    /// Training interactions per item (global order).
    pub train_counts: Vec<u32>,
    /// Frozen image rows, when the model reads them.
    pub image: Option<FeatureMatrix>,
    /// Frozen text rows, when the model reads them.
    pub text: Option<FeatureMatrix>,
    /// Items added after training, in the order of their ids (after the catalogue's).
    pub added: Vec<NewItem>,
}

/// What [`save`] wrote.
#[derive(Debug, Clone)]
pub struct SaveReport {
    /// The model folder.
    pub dir: PathBuf,
    /// Each file and its size in bytes.
    pub files: Vec<(String, u64)>,
    /// Items in the catalogue.
    pub items: usize,
}

impl SaveReport {
    /// Bytes of every file together.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, b)| b).sum()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The size and SHA-256 of a file, read in chunks.
fn sha256_of_file(path: &Path) -> Result<(u64, String)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let sha = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((len, sha))
}

/// Writes `bytes` to `path` and flushes it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// The feature matrices as one safetensors file (`image`, `text`).
fn features_bytes(image: Option<&FeatureMatrix>, text: Option<&FeatureMatrix>) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let raw =
        |m: &FeatureMatrix| -> Vec<u8> { m.data().iter().flat_map(|v| v.to_le_bytes()).collect() };
    let parts: Vec<(&str, &FeatureMatrix, Vec<u8>)> = [("image", image), ("text", text)]
        .into_iter()
        .filter_map(|(name, m)| m.map(|m| (name, m, raw(m))))
        .collect();
    let views = parts
        .iter()
        .map(|(name, m, bytes)| {
            TensorView::new(safetensors::Dtype::F32, vec![m.rows(), m.dim()], bytes)
                .map(|v| (*name, v))
                .map_err(|e| Error::InvalidInput(format!("{name} features: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None)
        .map_err(|e| Error::InvalidInput(format!("serialising the features: {e}")))
}

/// Reads the tensor `name` of a features file, if there.
fn read_feature(path: &Path, bytes: &[u8], name: &str) -> Result<Option<FeatureMatrix>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    let Ok(view) = st.tensor(name) else {
        return Ok(None);
    };
    let shape = view.shape();
    if view.dtype() != safetensors::Dtype::F32 || shape.len() != 2 {
        return Err(Error::format(
            path,
            format!(
                "tensor {name}: expected a 2-d float32 matrix, found {:?} of shape {shape:?}",
                view.dtype()
            ),
        ));
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    FeatureMatrix::new(shape[0], shape[1], values)
        .map(Some)
        .map_err(|e| Error::format(path, format!("tensor {name}: {e}")))
}

/// Writes a model folder at `dir` from a model in validation mode and its catalogue: the
/// folder is built beside `dir` and then replaces it whole. An existing `dir` is replaced only
/// when it is a model folder (has a `manifest.json`) or empty.
pub fn save(dir: &Path, model: &LlmEmf, parts: &ModelDirParts) -> Result<SaveReport> {
    let catalogue = &parts.catalogue;
    let n = catalogue.num_items();
    if parts.train_counts.len() != n {
        return Err(Error::InvalidInput(format!(
            "{} training counts for {n} items",
            parts.train_counts.len()
        )));
    }
    for (what, m) in [("image", &parts.image), ("text", &parts.text)] {
        if let Some(m) = m
            && m.rows() != n
        {
            return Err(Error::InvalidInput(format!(
                "{what} features have {} rows for {n} items",
                m.rows()
            )));
        }
    }
    if dir.exists() {
        let is_model = dir.join(MANIFEST).is_file();
        let is_empty = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .next()
            .is_none();
        if !is_model && !is_empty {
            return Err(Error::InvalidInput(format!(
                "{}: exists and is not a model folder (no {MANIFEST}); choose another --out or remove it",
                dir.display()
            )));
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::InvalidInput(format!("{}: not a folder name", dir.display())))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let staging = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
    let written = write_parts(&staging, model, parts);
    let files = match written {
        Ok(files) => files,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // Swap: the old folder steps aside, the new one takes its name, the old one goes.
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    if let Err(e) = std::fs::rename(&staging, dir) {
        if old.exists() {
            let _ = std::fs::rename(&old, dir);
        }
        return Err(Error::io(dir, e));
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(SaveReport {
        dir: dir.to_path_buf(),
        files,
        items: n,
    })
}

/// Writes every file into `dir` (a fresh folder), the manifest last.
fn write_parts(dir: &Path, model: &LlmEmf, parts: &ModelDirParts) -> Result<Vec<(String, u64)>> {
    let catalogue = &parts.catalogue;
    let mut entries = BTreeMap::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        write_synced(&dir.join(name), bytes)?;
        entries.insert(
            name.to_string(),
            FileEntry {
                bytes: bytes.len() as u64,
                sha256: sha256_hex(bytes),
            },
        );
        Ok(())
    };
    let model_file = ModelFile {
        dataset: catalogue.name().to_string(),
        domains: catalogue.domains().clone(),
        model: parts.config.clone(),
        score: parts.score.clone(),
        feature_widths: FeatureWidths {
            image: parts.image.as_ref().map(FeatureMatrix::dim),
            text: parts.text.as_ref().map(FeatureMatrix::dim),
        },
    };
    let json = serde_json::to_vec_pretty(&model_file)
        .map_err(|e| Error::InvalidInput(format!("serialising {MODEL}: {e}")))?;
    put(MODEL, &json)?;
    let mut items = String::new();
    for (id, item) in catalogue.items().iter().enumerate() {
        let id = id as ItemId;
        let domain = catalogue
            .domain_of(id)
            .map(|d| catalogue.domain(d).name.clone())
            .unwrap_or_default();
        let line = ItemLine {
            id,
            domain,
            key: item.key.clone(),
            title: item.title.clone(),
            train_count: parts.train_counts[id as usize],
        };
        items.push_str(
            &serde_json::to_string(&line)
                .map_err(|e| Error::InvalidInput(format!("serialising item {id}: {e}")))?,
        );
        items.push('\n');
    }
    put(ITEMS, items.as_bytes())?;
    if parts.image.is_some() || parts.text.is_some() {
        put(
            FEATURES,
            &features_bytes(parts.image.as_ref(), parts.text.as_ref())?,
        )?;
    }
    if !parts.added.is_empty() {
        let mut lines = String::new();
        for item in &parts.added {
            lines.push_str(&serde_json::to_string(item).map_err(|e| {
                Error::InvalidInput(format!("serialising added item {:?}: {e}", item.key))
            })?);
            lines.push('\n');
        }
        put(ADDED, lines.as_bytes())?;
    }
    // Serialised in memory, then written like every other file (flushed, the same mode).
    let weights_path = dir.join(WEIGHTS);
    let mut store = SafetensorsStore::from_bytes(None);
    model
        .clone()
        .save_into(&mut store)
        .map_err(|e| Error::checkpoint(&weights_path, format!("{e:?}")))?;
    let weights = store
        .get_bytes()
        .map_err(|e| Error::checkpoint(&weights_path, format!("{e:?}")))?;
    put(WEIGHTS, &weights)?;
    drop(weights);
    let files: Vec<(String, u64)> = entries.iter().map(|(k, v)| (k.clone(), v.bytes)).collect();
    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: FORMAT_VERSION,
        written_by: format!("llm_emf {}", env!("CARGO_PKG_VERSION")),
        files: entries,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::InvalidInput(format!("serialising {MANIFEST}: {e}")))?;
    write_synced(&dir.join(MANIFEST), &json)?;
    let mut files = files;
    files.push((MANIFEST.to_string(), json.len() as u64));
    Ok(files)
}

/// Whether `dir` holds a model folder (a `manifest.json`), as opposed to a run folder.
pub fn is_model_dir(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// Reads and checks the manifest, then returns the verified bytes of every file it lists.
fn read_verified(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let manifest_path = dir.join(MANIFEST);
    if !manifest_path.is_file() {
        return Err(Error::InvalidInput(format!(
            "{}: not a model folder (no {MANIFEST}); write one with `llm-emf export RUN --out DIR`",
            dir.display()
        )));
    }
    let manifest: Manifest = crate::io::read_json(&manifest_path)?;
    if manifest.format != FORMAT {
        return Err(Error::format(
            &manifest_path,
            format!("format {:?}, expected {FORMAT:?}", manifest.format),
        ));
    }
    if manifest.version != FORMAT_VERSION {
        return Err(Error::format(
            &manifest_path,
            format!(
                "model folder format version {} (written by {}), but this build reads version {FORMAT_VERSION}: export the run again with this build, or load it with the version that wrote it",
                manifest.version, manifest.written_by
            ),
        ));
    }
    for required in [MODEL, ITEMS, WEIGHTS] {
        if !manifest.files.contains_key(required) {
            return Err(Error::format(
                &manifest_path,
                format!("lists no {required}"),
            ));
        }
    }
    let mut out = BTreeMap::new();
    for (name, entry) in &manifest.files {
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(Error::format(
                &manifest_path,
                format!("file name {name:?} is not a plain name in the folder"),
            ));
        }
        let path = dir.join(name);
        // The weights are checked as a stream and read by the store from the file (mapped),
        // so the largest file is never held twice.
        let (len, sha, bytes) = if name == WEIGHTS {
            let (len, sha) = sha256_of_file(&path)?;
            (len, sha, Vec::new())
        } else {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            (bytes.len() as u64, sha256_hex(&bytes), bytes)
        };
        if len != entry.bytes {
            return Err(Error::format(
                &path,
                format!(
                    "{len} bytes, but the manifest says {} (truncated or replaced): export the model again",
                    entry.bytes
                ),
            ));
        }
        if sha != entry.sha256 {
            return Err(Error::format(
                &path,
                "checksum differs from the manifest's (the file changed after export): export the model again",
            ));
        }
        out.insert(name.clone(), bytes);
    }
    Ok(out)
}

/// Reads a model folder's parts on the host, checking the manifest, the checksums and that
/// the parts agree. The weights are read by [`load`].
pub fn read_parts(dir: &Path) -> Result<ModelDirParts> {
    let files = read_verified(dir)?;
    read_parts_from(dir, &files)
}

fn read_parts_from(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<ModelDirParts> {
    let model_path = dir.join(MODEL);
    let model_file: ModelFile = serde_json::from_slice(&files[MODEL])
        .map_err(|e| Error::format(&model_path, e.to_string()))?;
    model_file
        .model
        .validate()
        .map_err(|e| Error::format(&model_path, e.to_string()))?;
    let items_path = dir.join(ITEMS);
    let text = std::str::from_utf8(&files[ITEMS])
        .map_err(|e| Error::format(&items_path, format!("not UTF-8: {e}")))?;
    let domains = model_file.domains.clone();
    let n = (domains[0].len + domains[1].len) as usize;
    let mut items = Vec::with_capacity(n);
    let mut counts = Vec::with_capacity(n);
    for (no, line) in text.lines().enumerate() {
        let line_no = no + 1;
        let l: ItemLine = serde_json::from_str(line)
            .map_err(|e| Error::parse(&items_path, line_no, e.to_string()))?;
        let id = items.len() as ItemId;
        if l.id != id {
            return Err(Error::parse(
                &items_path,
                line_no,
                format!(
                    "item {} where item {id} was expected (one line per item, in id order)",
                    l.id
                ),
            ));
        }
        let domain = domains.iter().find(|d| d.contains(id));
        if domain.map(|d| d.name.as_str()) != Some(l.domain.as_str()) {
            return Err(Error::parse(
                &items_path,
                line_no,
                format!(
                    "item {id} is in domain {:?}, but {MODEL} puts it in {:?}",
                    l.domain,
                    domain.map(|d| d.name.as_str()).unwrap_or("no domain")
                ),
            ));
        }
        items.push(Item {
            title: l.title,
            attributes: None,
            key: l.key,
        });
        counts.push(l.train_count);
    }
    if items.len() != n {
        return Err(Error::format(
            &items_path,
            format!("{} items, but the domains of {MODEL} hold {n}", items.len()),
        ));
    }
    let (image, text) = match files.get(FEATURES) {
        Some(bytes) => {
            let path = dir.join(FEATURES);
            (
                read_feature(&path, bytes, "image")?,
                read_feature(&path, bytes, "text")?,
            )
        }
        None => (None, None),
    };
    let features_path = dir.join(FEATURES);
    for (what, m, width) in [
        ("image", &image, model_file.feature_widths.image),
        ("text", &text, model_file.feature_widths.text),
    ] {
        match (m, width) {
            (Some(m), Some(w)) if m.rows() == n && m.dim() == w => {}
            (Some(m), Some(w)) => {
                return Err(Error::format(
                    &features_path,
                    format!(
                        "{what} rows are [{}, {}], but {MODEL} says [{n}, {w}]",
                        m.rows(),
                        m.dim()
                    ),
                ));
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::format(
                    &features_path,
                    format!(
                        "{what} rows and {MODEL}'s feature widths disagree on whether there are any"
                    ),
                ));
            }
        }
    }
    let mut added = Vec::new();
    if let Some(bytes) = files.get(ADDED) {
        let path = dir.join(ADDED);
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::format(&path, format!("not UTF-8: {e}")))?;
        for (no, line) in text.lines().enumerate() {
            added.push(
                serde_json::from_str::<NewItem>(line)
                    .map_err(|e| Error::parse(&path, no + 1, e.to_string()))?,
            );
        }
    }
    let catalogue = Dataset::new(
        model_file.dataset,
        domains,
        items,
        TrainingData::Missing {
            path: dir.to_path_buf(),
            hint: "a model folder holds no interactions: train from the dataset itself".into(),
        },
        Vec::new(),
        Vec::new(),
    )
    .map_err(|e| Error::format(&model_path, e.to_string()))?;
    Ok(ModelDirParts {
        config: model_file.model,
        score: model_file.score,
        catalogue,
        train_counts: counts,
        image,
        text,
        added,
    })
}

/// A loaded model folder: the model in validation mode, its features and its catalogue.
#[derive(Debug)]
pub struct LoadedModel {
    /// The model, in validation mode, with its score settings applied.
    pub model: LlmEmf,
    /// The frozen features on the device.
    pub features: ItemFeatures,
    /// Everything else the folder holds.
    pub parts: ModelDirParts,
}

/// Loads a model folder onto `device`: checks it ([`read_parts`]), builds the model from its
/// configuration and catalogue, reads every parameter from `weights.safetensors` (each must be
/// there with its shape), and applies the score settings.
pub fn load(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let files = read_verified(dir)?;
    let parts = read_parts_from(dir, &files)?;
    drop(files);
    let features = ItemFeatures::new(
        parts.image.as_ref(),
        parts.text.as_ref(),
        parts.catalogue.num_items(),
        device,
    )?;
    let catalogue = Catalogue::new(
        DomainId::BOTH.map(|d| parts.catalogue.domain(d).len as usize),
        parts.train_counts.clone(),
    )?;
    let model_path = dir.join(MODEL);
    let model = parts
        .config
        .init(&catalogue, &features, device)
        .map_err(|e| Error::format(&model_path, e.to_string()))?;
    let weights_path = dir.join(WEIGHTS);
    let mut store = SafetensorsStore::from_file(&weights_path)
        .validate(true)
        .allow_partial(false);
    let mut model = model;
    let result = model
        .load_from(&mut store)
        .map_err(|e| Error::checkpoint(&weights_path, e))?;
    let mut problems = Vec::new();
    if !result.missing.is_empty() {
        let names: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
        problems.push(format!("missing parameters: {}", names.join(", ")));
    }
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        problems.push(format!("parameters that do not fit: {}", errors.join("; ")));
    }
    if !result.unused.is_empty() {
        problems.push(format!(
            "tensors the model does not have: {}",
            result.unused.join(", ")
        ));
    }
    if !problems.is_empty() {
        return Err(Error::checkpoint(
            &weights_path,
            format!("does not match {MODEL}: {}", problems.join("; ")),
        ));
    }
    model
        .apply_score_settings(&parts.score)
        .map_err(|e| Error::format(&model_path, e.to_string()))?;
    Ok(LoadedModel {
        model: model.valid(),
        features,
        parts,
    })
}

/// Adds `items` to the model folder at `dir`: they are checked as [`Recommender::add_items`]
/// checks them (against the catalogue and the items added before), then the folder is
/// written anew with them, in place of the old one. A [`Recommender`] loaded from the folder
/// afterwards recommends them by their text.
pub fn add_items(dir: &Path, items: &[NewItem], device: &Device) -> Result<SaveReport> {
    let loaded = load(dir, device)?;
    let mut check = Recommender::new(
        loaded.model.clone(),
        loaded.features.clone(),
        loaded.parts.catalogue.clone(),
        &loaded.parts.config,
        device,
    );
    check.add_items(&loaded.parts.added)?;
    check.add_items(items)?;
    let mut parts = loaded.parts;
    parts.added.extend(items.iter().cloned());
    save(dir, &loaded.model, &parts)
}
