//! Item text as the encoders and the enrichment prompt read it.

/// Decodes HTML entities (named, decimal and hexadecimal) twice, then trims.
pub fn clean_text(text: &str) -> String {
    let once = html_escape::decode_html_entities(text);
    let twice = html_escape::decode_html_entities(&once);
    twice.trim().to_string()
}
