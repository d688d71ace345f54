//! A dense `[rows, dim]` float32 feature matrix and its file formats.
//!
//! - `.npy`: NumPy format 1.0-3.0, little-endian `<f4`, `<f8` or `<f2` (converted to f32), C or Fortran
//!   order.
//! - `.safetensors`: the single tensor of the file, or the one named `embeddings`; F32, F64 or F16.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::write_atomic;

/// A dense row-major `[rows, dim]` matrix of item features.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    rows: usize,
    dim: usize,
    data: Vec<f32>,
}

impl FeatureMatrix {
    /// Wraps row-major data. Errors unless `data.len() == rows * dim` and every value is finite.
    pub fn new(rows: usize, dim: usize, data: Vec<f32>) -> Result<Self> {
        let needed = rows.checked_mul(dim);
        if dim == 0 || needed != Some(data.len()) {
            return Err(Error::InvalidInput(format!(
                "feature matrix of shape [{rows}, {dim}] needs {} values, got {}",
                needed.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                data.len()
            )));
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "feature matrix has a non-finite value ({}) at row {}, column {}",
                data[pos],
                pos / dim,
                pos % dim
            )));
        }
        Ok(Self { rows, dim, data })
    }

    /// Number of rows (items).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Width of each row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row-major values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// One row.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Reads a `.npy` or `.safetensors` file (by extension), checking the row count when
    /// `expected_rows` is given.
    pub fn load(path: &Path, expected_rows: Option<usize>) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let (rows, dim, data) = match ext.as_str() {
            "npy" => parse_npy(&bytes).map_err(|m| Error::format(path, m))?,
            "safetensors" => parse_safetensors(&bytes).map_err(|m| Error::format(path, m))?,
            _ => {
                return Err(Error::format(
                    path,
                    "unknown feature file type: expected a .npy or .safetensors file",
                ));
            }
        };
        let matrix = Self::new(rows, dim, data).map_err(|e| match e {
            Error::InvalidInput(m) => Error::format(path, m),
            other => other,
        })?;
        if let Some(n) = expected_rows
            && n != rows
        {
            return Err(Error::format(
                path,
                format!(
                    "has {rows} rows, but the dataset has {n} items (one row per item, in global id order)"
                ),
            ));
        }
        Ok(matrix)
    }

    /// Writes the matrix as a `.npy` file (`<f4`, C order), atomically.
    pub fn save_npy(&self, path: &Path) -> Result<()> {
        let mut header = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
            self.rows, self.dim
        );
        // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
        let unpadded = 10 + header.len() + 1;
        header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
        header.push('\n');
        let mut out = Vec::with_capacity(10 + header.len() + self.data.len() * 4);
        out.extend_from_slice(b"\x93NUMPY\x01\x00");
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        for v in &self.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
        write_atomic(path, &out)
    }
}

type Parsed = (usize, usize, Vec<f32>);

fn parse_npy(bytes: &[u8]) -> std::result::Result<Parsed, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let descr = dict_value(header, "descr").ok_or("the .npy header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran =
        dict_value(header, "fortran_order").ok_or("the .npy header has no 'fortran_order'")?;
    let fortran = fortran.starts_with("True");
    let shape = dict_value(header, "shape").ok_or("the .npy header has no 'shape'")?;
    let dims: Vec<usize> = shape
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape:?}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let [rows, dim] = dims[..] else {
        return Err(format!(
            "expected a 2-D [items, dim] array, found shape {dims:?}"
        ));
    };
    let body = &bytes[start + header_len..];
    let values: Vec<f32> = match descr {
        "<f4" | "|f4" => decode(body, count(rows, dim)?, 4, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })?,
        "<f8" => decode(body, count(rows, dim)?, 8, |b| {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        })?,
        "<f2" => decode(body, count(rows, dim)?, 2, |b| {
            f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
        })?,
        other => {
            return Err(format!(
                "unsupported dtype {other:?}: expected little-endian float32 ('<f4'), float64 or float16"
            ));
        }
    };
    let values = if fortran {
        let mut c = vec![0.0; values.len()];
        for r in 0..rows {
            for d in 0..dim {
                c[r * dim + d] = values[d * rows + r];
            }
        }
        c
    } else {
        values
    };
    Ok((rows, dim, values))
}

/// The text after `'key':` up to the next top-level comma of a Python dict literal.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[pos + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    if rest.starts_with('(') {
        return rest.find(')').map(|end| &rest[..=end]);
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// `rows * dim`, or an error when a header's shape overflows.
fn count(rows: usize, dim: usize) -> std::result::Result<usize, String> {
    rows.checked_mul(dim)
        .filter(|n| n.checked_mul(8).is_some())
        .ok_or_else(|| format!("shape [{rows}, {dim}] is too large"))
}

fn decode(
    body: &[u8],
    count: usize,
    width: usize,
    f: impl Fn(&[u8]) -> f32,
) -> std::result::Result<Vec<f32>, String> {
    if body.len() != count * width {
        return Err(format!(
            "data holds {} bytes, the shape needs {}",
            body.len(),
            count * width
        ));
    }
    Ok(body.chunks_exact(width).map(f).collect())
}

fn parse_safetensors(bytes: &[u8]) -> std::result::Result<Parsed, String> {
    use safetensors::{Dtype, SafeTensors};
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let names = st.names();
    let name = if names.len() == 1 {
        names[0].to_string()
    } else if names.contains(&"embeddings") {
        "embeddings".to_string()
    } else {
        return Err(format!(
            "holds {} tensors ({}): expected one, or one named `embeddings`",
            names.len(),
            names.join(", ")
        ));
    };
    let view = st.tensor(&name).map_err(|e| e.to_string())?;
    let [rows, dim] = view.shape()[..] else {
        return Err(format!(
            "tensor {name:?} has shape {:?}: expected [items, dim]",
            view.shape()
        ));
    };
    let data = view.data();
    let values = match view.dtype() {
        Dtype::F32 => decode(data, count(rows, dim)?, 4, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })?,
        Dtype::F64 => decode(data, count(rows, dim)?, 8, |b| {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        })?,
        Dtype::F16 => decode(data, count(rows, dim)?, 2, |b| {
            f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
        })?,
        other => {
            return Err(format!(
                "tensor {name:?} has dtype {other:?}: expected F32, F64 or F16"
            ));
        }
    };
    Ok((rows, dim, values))
}

/// IEEE 754 half precision to single precision (exact: every f16 is an f32).
fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exp = u32::from((bits >> 10) & 0x1f);
    let frac = u32::from(bits & 0x3ff);
    let out = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise the fraction.
            let (mut e, mut m) = (127 - 15 + 1, frac);
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, _) => sign | (0xff << 23) | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        let m = FeatureMatrix::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]).unwrap();
        m.save_npy(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_end = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!(header_end % 64, 0);
        assert_eq!(FeatureMatrix::load(&path, Some(3)).unwrap(), m);
    }

    #[test]
    fn npy_f2_is_widened() {
        let header = "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 3), }\n";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        // 0.5, -2.0, and the smallest subnormal 2^-24.
        for bits in [0x3800u16, 0xc000, 0x0001] {
            bytes.extend_from_slice(&bits.to_le_bytes());
        }
        let (_, _, v) = parse_npy(&bytes).unwrap();
        assert_eq!(v, vec![0.5, -2.0, 2.0f32.powi(-24)]);
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn npy_fortran_order_and_f8() {
        let header = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }\n";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        // Column-major [[1,2,3],[4,5,6]] = 1,4,2,5,3,6.
        for v in [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let (r, d, v) = parse_npy(&bytes).unwrap();
        assert_eq!((r, d), (2, 3));
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn safetensors_single_tensor() {
        use safetensors::tensor::TensorView;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        let values: Vec<u8> = [0.5f32, 1.5, 2.5, 3.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view = TensorView::new(safetensors::Dtype::F32, vec![2, 2], &values).unwrap();
        safetensors::serialize_to_file([("emb", view)], None, &path).unwrap();
        let m = FeatureMatrix::load(&path, None).unwrap();
        assert_eq!(m.row(1), &[2.5, 3.5]);
    }

    #[test]
    fn wrong_row_count_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        FeatureMatrix::new(2, 1, vec![1.0, 2.0])
            .unwrap()
            .save_npy(&path)
            .unwrap();
        let err = FeatureMatrix::load(&path, Some(5)).unwrap_err().to_string();
        assert!(
            err.contains("f.npy") && err.contains("has 2 rows") && err.contains("5 items"),
            "{err}"
        );
    }

    #[test]
    fn nan_is_an_error_naming_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.npy");
        let m = FeatureMatrix {
            rows: 2,
            dim: 2,
            data: vec![0.0, 1.0, f32::NAN, 2.0],
        };
        m.save_npy(&path).unwrap();
        let err = FeatureMatrix::load(&path, Some(2)).unwrap_err().to_string();
        assert!(
            err.contains("nan.npy") && err.contains("row 1, column 0"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_and_bad_extension() {
        let err = FeatureMatrix::load(Path::new("/nonexistent/img.npy"), None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/img.npy"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        std::fs::write(&path, "1,2").unwrap();
        let err = FeatureMatrix::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("f.csv") && err.contains(".npy"), "{err}");
    }

    #[test]
    fn overflowing_shape_is_an_error() {
        let header =
            "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 4), }\n";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        let err = parse_npy(&bytes).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn truncated_npy_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        FeatureMatrix::new(2, 2, vec![1.0; 4])
            .unwrap()
            .save_npy(&path)
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = FeatureMatrix::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("t.npy") && err.contains("bytes"), "{err}");
    }
}
