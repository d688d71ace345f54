//! CLIP's image preprocessing with the `image` crate: resize the shortest side to `resize`
//! pixels (bicubic), centre-crop to `crop` x `crop`, RGB, scale to [0, 1], normalise per channel.
//!
//! The resize is Catmull-Rom (cubic, a = -0.5: PIL's `BICUBIC`) with the filter widened when
//! shrinking, as PIL does; the long side becomes `floor(long * resize / short)` and the crop's
//! corner `((h - crop) / 2, (w - crop) / 2)` rounded down, as Hugging Face's `CLIPImageProcessor`.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use crate::error::{Error, Result};

// The digits are OpenAI's published values, kept as written (f32 rounds them).
/// CLIP's per-channel mean (RGB).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel standard deviation (RGB).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Image preprocessing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePreprocess {
    /// Target of the shortest side.
    pub resize: usize,
    /// Side of the centre crop (the model's input).
    pub crop: usize,
    /// Per-channel mean, after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

fn side(value: Option<&serde_json::Value>, keys: &[&str]) -> Option<usize> {
    let v = value?;
    if let Some(n) = v.as_u64() {
        return Some(n as usize);
    }
    keys.iter()
        .find_map(|k| v.get(*k).and_then(serde_json::Value::as_u64))
        .map(|n| n as usize)
}

fn triple(value: Option<&serde_json::Value>, default: [f32; 3]) -> Option<[f32; 3]> {
    let Some(v) = value else {
        return Some(default);
    };
    let a = v.as_array()?;
    if a.len() != 3 {
        return None;
    }
    let mut out = [0.0; 3];
    for (o, x) in out.iter_mut().zip(a) {
        *o = x.as_f64()? as f32;
    }
    Some(out)
}

impl ImagePreprocess {
    /// CLIP's preprocessing for `side`-pixel inputs.
    pub fn clip(side: usize) -> Self {
        Self {
            resize: side,
            crop: side,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// Reads a Hugging Face `preprocessor_config.json` (`size`, `crop_size`, `image_mean`,
    /// `image_std`).
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = crate::io::read_text(path)?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
        let crop = side(v.get("crop_size"), &["height", "width", "shortest_edge"]);
        let resize = side(v.get("size"), &["shortest_edge", "height"]);
        let (Some(resize), Some(crop)) = (resize.or(crop), crop.or(resize)) else {
            return Err(Error::format(path, "no `size` or `crop_size`"));
        };
        let mean = triple(v.get("image_mean"), CLIP_MEAN)
            .ok_or_else(|| Error::format(path, "`image_mean` must hold 3 numbers"))?;
        let std = triple(v.get("image_std"), CLIP_STD)
            .ok_or_else(|| Error::format(path, "`image_std` must hold 3 numbers"))?;
        if crop == 0 || resize < crop || std.iter().any(|s| *s <= 0.0) {
            return Err(Error::format(
                path,
                format!("unusable sizes (resize {resize}, crop {crop}) or std {std:?}"),
            ));
        }
        Ok(Self {
            resize,
            crop,
            mean,
            std,
        })
    }

    /// Values per image: `3 * crop * crop`.
    pub fn len(&self) -> usize {
        3 * self.crop * self.crop
    }

    /// Whether the output is empty (never, for a valid configuration).
    pub fn is_empty(&self) -> bool {
        self.crop == 0
    }

    /// Reads and preprocesses an image file: `[3, crop, crop]` row-major.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>> {
        let img = image::ImageReader::open(path)
            .map_err(|e| Error::io(path, e))?
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))?
            .decode()
            .map_err(|e| Error::format(path, format!("not a readable image: {e}")))?;
        Ok(self.apply(&img))
    }

    /// Preprocesses a decoded image: `[3, crop, crop]` row-major.
    pub fn apply(&self, img: &DynamicImage) -> Vec<f32> {
        let rgb = img.to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let (w, h) = (w.max(1), h.max(1));
        let (nw, nh) = if w <= h {
            (self.resize, (h * self.resize / w).max(self.crop))
        } else {
            ((w * self.resize / h).max(self.crop), self.resize)
        };
        let resized: RgbImage = if (nw, nh) == (w, h) {
            rgb
        } else {
            image::imageops::resize(&rgb, nw as u32, nh as u32, FilterType::CatmullRom)
        };
        let top = (nh - self.crop) / 2;
        let left = (nw - self.crop) / 2;
        let c = self.crop;
        let mut out = vec![0.0f32; 3 * c * c];
        for y in 0..c {
            for x in 0..c {
                let p = resized.get_pixel((left + x) as u32, (top + y) as u32);
                for ch in 0..3 {
                    out[ch * c * c + y * c + x] =
                        (f32::from(p[ch]) / 255.0 - self.mean[ch]) / self.std[ch];
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_the_centre_and_normalises() {
        // A 6x4 image: left half black, right half white; shortest side 4 -> no resize at 4.
        let mut img = RgbImage::new(6, 4);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < 3 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            };
        }
        let pre = ImagePreprocess {
            resize: 4,
            crop: 4,
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        let out = pre.apply(&DynamicImage::ImageRgb8(img));
        assert_eq!(out.len(), 3 * 16);
        // Crop starts at column 1: columns 1, 2 black (-1), 3, 4 white (+1).
        assert_eq!(&out[0..4], &[-1.0, -1.0, 1.0, 1.0]);
        assert_eq!(&out[32..36], &[-1.0, -1.0, 1.0, 1.0]);
    }

    #[test]
    fn resizes_the_shortest_side_keeping_the_aspect_ratio() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(40, 20, image::Rgb([10, 200, 30])));
        let pre = ImagePreprocess::clip(8);
        let out = pre.apply(&img);
        assert_eq!(out.len(), 3 * 64);
        // A flat image stays flat through a cubic resize.
        let red = (10.0 / 255.0 - CLIP_MEAN[0]) / CLIP_STD[0];
        assert!(out[..64].iter().all(|v| (v - red).abs() < 1e-5));
    }

    #[test]
    fn unreadable_and_missing_images_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("broken.jpg");
        std::fs::write(&bad, b"not an image").unwrap();
        let pre = ImagePreprocess::clip(8);
        let err = pre.load(&bad).unwrap_err().to_string();
        assert!(err.contains("broken.jpg"), "{err}");
        let err = pre
            .load(&dir.path().join("missing.png"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.png"), "{err}");
    }

    #[test]
    fn reads_hugging_face_preprocessor_configs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preprocessor_config.json");
        std::fs::write(
            &path,
            r#"{"crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 224},
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3}"#,
        )
        .unwrap();
        assert_eq!(
            ImagePreprocess::from_hf_file(&path).unwrap(),
            ImagePreprocess::clip(224)
        );
        std::fs::write(&path, r#"{"crop_size": 224, "image_mean": [1, 2]}"#).unwrap();
        let err = ImagePreprocess::from_hf_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("image_mean"), "{err}");
    }
}
