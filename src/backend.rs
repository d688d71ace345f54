//! Choosing a device by name: the one place of the library that names Burn backends, for the
//! binaries, examples, tests and benches. Everything else takes a [`Device`].

use burn::tensor::Device;

use crate::error::{Error, Result};

/// The default CPU device: `ndarray` when that feature is on, else `flex`.
#[allow(deprecated, unreachable_code)]
pub fn cpu() -> Result<Device> {
    #[cfg(feature = "ndarray")]
    return Ok(Device::ndarray());
    #[cfg(feature = "flex")]
    return Ok(Device::flex());
    Err(Error::Config(
        "no CPU backend compiled in: build with `--features ndarray` or `--features flex`".into(),
    ))
}

/// Parses `cpu`, `ndarray`, `flex`, `wgpu` or `cuda` into a device, with an error naming the cargo
/// feature to enable when the backend is not compiled in.
#[allow(deprecated, unreachable_code)]
pub fn device(name: &str) -> Result<Device> {
    let missing = |feature: &str| {
        Err(Error::Config(format!(
            "device {name:?} needs the `{feature}` cargo feature: rebuild with `--features {feature}`"
        )))
    };
    match name.to_ascii_lowercase().as_str() {
        "cpu" => cpu(),
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            return Ok(Device::ndarray());
            missing("ndarray")
        }
        "flex" => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            missing("flex")
        }
        "wgpu" | "gpu" => {
            #[cfg(feature = "wgpu")]
            return Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
            missing("wgpu")
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(0));
            missing("cuda")
        }
        other => Err(Error::Config(format!(
            "unknown device {other:?}: expected cpu, ndarray, flex, wgpu or cuda"
        ))),
    }
}

/// The device named by the `LLM_EMF_DEVICE` environment variable (`cpu` when unset): lets the
/// test suite and the examples run on a GPU without code changes.
pub fn from_env() -> Result<Device> {
    match std::env::var("LLM_EMF_DEVICE") {
        Ok(name) if !name.trim().is_empty() => device(name.trim()),
        _ => cpu(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_backends_are_named() {
        let err = device("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device \"tpu\""), "{err}");
        #[cfg(not(feature = "cuda"))]
        assert!(
            device("cuda")
                .unwrap_err()
                .to_string()
                .contains("--features cuda")
        );
        assert!(device("CPU").is_ok());
    }
}
