//! Progress bars on stderr for long jobs (training epochs, embedding, enrichment): drawn by
//! indicatif with the `progress` feature (part of the `cli` feature); without it every bar is
//! hidden and costs nothing, so a service that embeds the library draws nothing.

/// A progress bar, or nothing.
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    #[cfg(feature = "progress")]
    bar: indicatif::ProgressBar,
}

impl Bar {
    /// A bar that draws nothing.
    pub fn hidden() -> Self {
        Self {
            #[cfg(feature = "progress")]
            bar: indicatif::ProgressBar::hidden(),
        }
    }

    /// A bar over `len` units named `unit`, with rate and ETA; hidden unless `show`.
    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub fn units(show: bool, len: u64, unit: &str) -> Self {
        if !show {
            return Self::hidden();
        }
        #[cfg(feature = "progress")]
        {
            let bar = indicatif::ProgressBar::new(len);
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "[{{bar:30}}] {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}} {{msg}}"
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            Self { bar }
        }
        #[cfg(not(feature = "progress"))]
        Self::hidden()
    }

    /// A bar over the `batches` of epoch `epoch` of `epochs`; hidden unless `show`.
    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub fn epoch(show: bool, batches: u64, epoch: usize, epochs: usize) -> Self {
        if !show {
            return Self::hidden();
        }
        #[cfg(feature = "progress")]
        {
            let bar = indicatif::ProgressBar::new(batches);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} batches, {per_sec}, eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            Self { bar }
        }
        #[cfg(not(feature = "progress"))]
        Self::hidden()
    }

    /// Advances by `n`.
    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub fn inc(&self, n: u64) {
        #[cfg(feature = "progress")]
        self.bar.inc(n);
    }

    /// Moves to `pos`.
    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub fn set_position(&self, pos: u64) {
        #[cfg(feature = "progress")]
        self.bar.set_position(pos);
    }

    /// Shows `message` after the counts.
    #[cfg_attr(not(feature = "enrich"), allow(dead_code))]
    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub fn set_message(&self, message: String) {
        #[cfg(feature = "progress")]
        self.bar.set_message(message);
    }

    /// Removes the bar.
    pub fn finish_and_clear(&self) {
        #[cfg(feature = "progress")]
        self.bar.finish_and_clear();
    }
}
