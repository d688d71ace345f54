//! Choosing a device by name: the one place of the library that names Burn backends, for the
//! binaries, examples, tests and benches. Everything else takes a [`Device`].

use burn::tensor::Device;

use crate::error::{Error, Result};

/// The default CPU device: `flex` when that feature is on (the default), else `ndarray`.
#[allow(deprecated, unreachable_code)]
pub fn cpu() -> Result<Device> {
    #[cfg(feature = "flex")]
    return Ok(Device::flex());
    #[cfg(feature = "ndarray")]
    return Ok(Device::ndarray());
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

/// Tunes the system allocator for training on the CPU: freed memory stays in the process for
/// the next step instead of going back to the kernel. With glibc's defaults, the large
/// activations of a step are fresh pages that fault in and are zeroed every step (about 12% of
/// the CPU samples of a Food-Kitchen epoch under `perf`; tuning raised training throughput by
/// 22%, docs/performance.md). Call it once at the start of a
/// program that trains or serves; it changes nothing but the allocator's thresholds (on glibc
/// Linux; elsewhere it does nothing). The `llm-emf` binary, the examples and the benches call it.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; the values are in their valid ranges.
    unsafe {
        // Blocks up to 1 GiB come from the heap (not from a fresh mapping each), up to 2 GiB
        // of free heap top is kept instead of trimmed, and the heap grows 256 MiB at a time.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
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
