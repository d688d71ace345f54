//! Items added to a served model after training, recommendable at once by their text.
//!
//! A model with title rows scores an item never seen in training by its mapped title (under
//! the row shrinkage its learned row is dropped, so it is exactly its title); a model with a
//! text modality scores it by its text row as well. An added item gets those rows from its
//! text vector alone (an image-less item: a zero image row, neutral in every cosine), new
//! columns in its domain's output tables, and a global id after the catalogue's. It competes
//! with every other item of its domain in Eq. 11's mixture; it cannot yet appear in a history
//! (the encoders' input rows are the trained table's).

use std::collections::HashSet;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::Recommender;
use crate::data::{Dataset, DomainId, ItemId};
use crate::error::{Error, Result};
use crate::features::TextEmbed;
use crate::model::Modality;

/// An item added to a served model after training ([`Recommender::add_items`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// Its domain.
    pub domain: DomainId,
    /// Its id in the source data; unique across the catalogue (the catalogue's items answer to
    /// their source key, or to their global id written out when they have none).
    pub key: String,
    /// Its title, returned with recommendations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its text vector, from the encoder that made the model's text features (for the
    /// `titles` preset, all-MiniLM-L6-v2 over the title); any scale.
    pub text: Vec<f32>,
}

impl Recommender {
    /// Columns of domain `d`'s score rows: its catalogue items, then its added items.
    pub(super) fn columns(&self, d: DomainId) -> usize {
        self.dataset.domain(d).len as usize + self.added[d.index()].len()
    }

    /// The global id of column `i` of domain `d`.
    pub(super) fn column_item(&self, d: DomainId, i: usize) -> ItemId {
        let dom = self.dataset.domain(d);
        match i.checked_sub(dom.len as usize) {
            None => dom.start + i as ItemId,
            Some(j) => self.added[d.index()][j].0,
        }
    }

    /// The domain and column of an added item.
    pub(super) fn added_column(&self, item: ItemId) -> Option<(DomainId, usize)> {
        let first = self.dataset.num_items() as ItemId;
        if item < first {
            return None;
        }
        DomainId::BOTH.into_iter().find_map(|d| {
            let at = self.added[d.index()]
                .iter()
                .position(|(id, _)| *id == item)?;
            Some((d, self.dataset.domain(d).len as usize + at))
        })
    }

    /// An item's title, catalogue or added.
    pub(super) fn title(&self, item: ItemId) -> Option<String> {
        match self.dataset.items().get(item as usize) {
            Some(it) => it.title.clone(),
            None => self
                .added
                .iter()
                .flatten()
                .find(|(id, _)| *id == item)
                .and_then(|(_, n)| n.title.clone()),
        }
    }

    /// The items added after training, with their global ids, in the order they were added
    /// within each domain (X's first).
    pub fn added_items(&self) -> impl Iterator<Item = (ItemId, &NewItem)> {
        self.added.iter().flatten().map(|(id, item)| (*id, item))
    }

    /// The global id of the item whose source key is `key` (a catalogue item without a key
    /// answers to its global id written out), catalogue or added.
    pub fn item_by_key(&self, key: &str) -> Option<ItemId> {
        let catalogue = self
            .dataset
            .items()
            .iter()
            .enumerate()
            .find(|(id, it)| match &it.key {
                Some(k) => k == key,
                None => id.to_string() == key,
            })
            .map(|(id, _)| id as ItemId);
        catalogue.or_else(|| {
            self.added_items()
                .find(|(_, n)| n.key == key)
                .map(|(id, _)| id)
        })
    }

    /// Width of the text vectors an added item needs; an error when the model cannot score an
    /// item by its text (no title rows and no text modality).
    pub fn new_item_text_width(&self) -> Result<usize> {
        let title_rows = self.model.items.as_ref().is_some_and(|t| t.has_text());
        let text_modality = self.model.modalities().contains(&Modality::Text);
        match self.features.dims()[Modality::Text.index()] {
            Some(width) if title_rows || text_modality => Ok(width),
            _ => Err(Error::InvalidInput(
                "this model has no text path (neither title rows nor a text modality): it cannot score an item it was not trained with; train one with text features (the titles preset) to add items by their text".into(),
            )),
        }
    }

    /// Adds `items`, recommendable at once in their domains, ranked by their text; returns
    /// their global ids (after the catalogue's and every earlier addition's). Every item is
    /// checked before any is added: an error names the item (by key) and the problem (a model
    /// without a text path, a text vector of the wrong width, empty or not finite, a key that
    /// an item already has).
    pub fn add_items(&mut self, items: &[NewItem]) -> Result<Vec<ItemId>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let width = self.new_item_text_width()?;
        let mut keys: HashSet<String> = self
            .dataset
            .items()
            .iter()
            .enumerate()
            .map(|(id, it)| it.key.clone().unwrap_or_else(|| id.to_string()))
            .chain(self.added_items().map(|(_, n)| n.key.clone()))
            .collect();
        for item in items {
            let key = &item.key;
            if key.is_empty() {
                return Err(Error::InvalidInput(
                    "a new item has an empty key: every item needs its id in the source data"
                        .into(),
                ));
            }
            if !keys.insert(key.clone()) {
                return Err(Error::InvalidInput(format!(
                    "new item {key:?}: an item with this key is already in the catalogue"
                )));
            }
            if item.text.len() != width {
                return Err(Error::InvalidInput(format!(
                    "new item {key:?}: a text vector of width {}, but the model's text features are {width} wide (embed the title with the encoder the model was trained with)",
                    item.text.len()
                )));
            }
            if let Some(bad) = item.text.iter().position(|v| !v.is_finite()) {
                return Err(Error::InvalidInput(format!(
                    "new item {key:?}: text value {bad} is not finite"
                )));
            }
            if item.text.iter().all(|&v| v == 0.0) {
                return Err(Error::InvalidInput(format!(
                    "new item {key:?}: no text (a zero text vector); an added item is ranked by its text alone"
                )));
            }
        }
        let first =
            (self.dataset.num_items() + self.added[0].len() + self.added[1].len()) as ItemId;
        let mut ids = Vec::with_capacity(items.len());
        for d in DomainId::BOTH {
            let of_domain: Vec<(usize, &NewItem)> = items
                .iter()
                .enumerate()
                .filter(|(_, it)| it.domain == d)
                .collect();
            if of_domain.is_empty() {
                continue;
            }
            // Unit rows, as the catalogue's text rows are uploaded.
            let mut values = Vec::with_capacity(of_domain.len() * width);
            for (_, it) in &of_domain {
                let norm = it.text.iter().map(|v| v * v).sum::<f32>().sqrt();
                values.extend(it.text.iter().map(|v| v / norm));
            }
            let text = Tensor::<2>::from_data(
                TensorData::new(values, [of_domain.len(), width]),
                &self.device,
            );
            for m in self.model.modalities() {
                let rows = self
                    .model
                    .text_only_rows(m, d, text.clone(), &self.features)?;
                let slot = &mut self.heads[d.index()][m.index()];
                if let Some(table) = slot.take() {
                    *slot = Some(Tensor::cat(vec![table, rows.clone()], 0));
                }
                let host = &mut self.host_heads[d.index()][m.index()];
                if let Some((table, _)) = host.as_mut() {
                    match rows.into_data().convert::<f32>().try_into_vec::<f32>() {
                        Ok(v) => table.extend(v),
                        // A table that cannot be read back leaves the domain on the device
                        // path, as at construction.
                        Err(_) => *host = None,
                    }
                }
            }
            for (k, it) in of_domain {
                let id = first + k as ItemId;
                self.added[d.index()].push((id, it.clone()));
                ids.push((k, id));
            }
        }
        ids.sort_unstable();
        Ok(ids.into_iter().map(|(_, id)| id).collect())
    }
}

/// One line of a new-items file ([`read_new_items`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItemLine {
    domain: String,
    key: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<Vec<f32>>,
}

/// Reads new items from a JSON-lines file of `{"domain": NAME, "key": ID, "title": "...",
/// "text": [floats]}` (blank lines skipped), each domain by its name in `catalogue` (or `X` /
/// `Y`). A line without `text` has its title embedded by `encoder` (the encoder the model's
/// text features came from); without an encoder, or without a title, it is an error naming the
/// file and line.
pub fn read_new_items(
    path: &Path,
    catalogue: &Dataset,
    encoder: Option<&dyn TextEmbed>,
) -> Result<Vec<NewItem>> {
    let text = crate::io::read_text(path)?;
    let mut items = Vec::new();
    let mut to_embed = Vec::new();
    for (no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let l: NewItemLine =
            serde_json::from_str(line).map_err(|e| Error::parse(path, no + 1, e.to_string()))?;
        let domain = catalogue
            .domain_by_name(&l.domain)
            .map_err(|e| Error::parse(path, no + 1, e.to_string()))?;
        let text = match (l.text, &l.title, encoder) {
            (Some(t), _, _) => t,
            (None, Some(title), Some(_)) => {
                to_embed.push((items.len(), crate::features::text::clean_text(title)));
                Vec::new()
            }
            (None, _, _) => {
                return Err(Error::parse(
                    path,
                    no + 1,
                    format!(
                        "item {:?} has no text vector: give `text`, or a title and an encoder to embed it (--weights)",
                        l.key
                    ),
                ));
            }
        };
        items.push(NewItem {
            domain,
            key: l.key,
            title: l.title,
            text,
        });
    }
    if let (Some(encoder), false) = (encoder, to_embed.is_empty()) {
        let titles: Vec<&str> = to_embed.iter().map(|(_, t)| t.as_str()).collect();
        let vectors = encoder.embed(&titles)?;
        let dim = encoder.dim();
        for ((i, _), v) in to_embed.iter().zip(vectors.chunks_exact(dim)) {
            items[*i].text = v.to_vec();
        }
    }
    Ok(items)
}
