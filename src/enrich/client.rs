//! A blocking client for OpenAI-compatible chat endpoints (`POST {base}/v1/chat/completions`),
//! with retries: exponential backoff with jitter on timeouts, connection errors, 429 and 5xx,
//! honouring `Retry-After`. The API key is read from an environment variable and appears in no
//! log, error or file.

use std::time::Duration;

use serde_json::json;

/// Settings of a [`ChatClient`].
#[derive(Clone, PartialEq)]
pub struct ClientConfig {
    /// Base URL (`http://127.0.0.1:8080`, `https://api.deepseek.com`); `/v1/chat/completions` is
    /// appended (`/chat/completions` when it already ends with `/v1`).
    pub base_url: String,
    /// Model name sent with each request.
    pub model: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// OpenAI's `frequency_penalty` (-2 to 2): positive values lower the odds of a token in
    /// proportion to how often the answer has used it, which breaks the loops small models
    /// fall into ("2-Ounce 2-Ounce 2-Ounce ..."). Not sent when `None` (the default).
    pub frequency_penalty: Option<f64>,
    /// Timeout of one request (connect + response).
    pub timeout: Duration,
    /// Retries after the first try.
    pub max_retries: usize,
    /// First backoff; doubled at each retry, with jitter (x0.5 to x1).
    pub backoff: Duration,
    /// Longest wait between tries (also caps `Retry-After`).
    pub max_backoff: Duration,
    /// API key (sent as `Authorization: Bearer`), never printed.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("frequency_penalty", &self.frequency_penalty)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl ClientConfig {
    /// Defaults for `base_url` and `model`: temperature 0.6 (DeepSeek-R1's recommendation),
    /// 1024 tokens, 120 s timeout, 5 retries from 1 s up to 60 s, no key.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            temperature: 0.6,
            max_tokens: 1024,
            frequency_penalty: None,
            timeout: Duration::from_secs(120),
            max_retries: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            api_key: None,
        }
    }

    /// Reads the API key from the environment variable `name` (unset or empty: no key).
    pub fn with_api_key_from_env(mut self, name: &str) -> Self {
        self.api_key = std::env::var(name).ok().filter(|k| !k.trim().is_empty());
        self
    }

    /// The chat-completions URL.
    pub fn url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    /// What happened (no secrets).
    pub message: String,
    /// Whether trying again may help.
    pub retryable: bool,
    /// The server's `Retry-After`, in seconds.
    pub retry_after: Option<f64>,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Removes reasoning blocks (`<think>...</think>`) that reasoning models put before their answer.
/// An unclosed `<think>` (the answer was cut off by the token limit) leaves nothing.
pub fn strip_think(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<think>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</think>") {
            Some(end) => rest = &rest[start + end + "</think>".len()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    // A stray closing tag with its opening in the server's template.
    let out = match out.rfind("</think>") {
        Some(i) => out[i + "</think>".len()..].to_string(),
        None => out,
    };
    out.trim().to_string()
}

/// A chat-completions client.
#[derive(Debug, Clone)]
pub struct ChatClient {
    agent: ureq::Agent,
    config: ClientConfig,
}

fn parse_retry_after(value: &str) -> Option<f64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
}

impl ChatClient {
    /// A client for `config`.
    pub fn new(config: ClientConfig) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self { agent, config }
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The JSON body of a request for `prompt`.
    pub fn request_body(&self, prompt: &str) -> serde_json::Value {
        let mut body = json!({
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "stream": false,
        });
        if let Some(p) = self.config.frequency_penalty {
            body["frequency_penalty"] = json!(p);
        }
        body
    }

    /// One try: the answer text (reasoning stripped), or why not.
    pub fn try_once(&self, prompt: &str) -> Result<String, CallError> {
        let body = self.request_body(prompt).to_string();
        let mut request = self
            .agent
            .post(&self.config.url())
            .header("Content-Type", "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = request.send(body.as_bytes()).map_err(|e| {
            let timeout = matches!(e, ureq::Error::Timeout(_));
            CallError {
                message: if timeout {
                    format!("timed out after {:.0?}", self.config.timeout)
                } else {
                    format!("request to {} failed: {e}", self.config.url())
                },
                retryable: matches!(
                    e,
                    ureq::Error::Timeout(_)
                        | ureq::Error::Io(_)
                        | ureq::Error::ConnectionFailed
                        | ureq::Error::HostNotFound
                        | ureq::Error::Protocol(_)
                        | ureq::Error::BodyStalled
                ),
                retry_after: None,
            }
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| CallError {
                message: format!("reading the response (HTTP {status}): {e}"),
                retryable: true,
                retry_after: None,
            })?;
        if status != 200 {
            let snippet: String = text.chars().take(200).collect();
            return Err(CallError {
                message: format!("HTTP {status}: {snippet}"),
                retryable: status == 408 || status == 429 || status >= 500,
                retry_after,
            });
        }
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| CallError {
            message: format!("malformed JSON response: {e}"),
            retryable: true,
            retry_after: None,
        })?;
        let content = value
            .pointer("/choices/0/message/content")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| CallError {
                message: "the response has no choices[0].message.content".into(),
                retryable: true,
                retry_after: None,
            })?;
        let answer = strip_think(content);
        if answer.is_empty() {
            return Err(CallError {
                message: "the answer is empty (only reasoning? raise --max-tokens)".into(),
                retryable: false,
                retry_after: None,
            });
        }
        Ok(answer)
    }

    /// The wait before retry `attempt` (1-based): `backoff * 2^(attempt-1)`, capped, times a
    /// jitter factor in [0.5, 1]; a server's `Retry-After` wins when longer.
    pub fn backoff(&self, attempt: usize, retry_after: Option<f64>, jitter: f64) -> Duration {
        let exp = self
            .config
            .backoff
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
            .min(self.config.max_backoff);
        let wait = exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        match retry_after {
            Some(s) => wait.max(Duration::from_secs_f64(s).min(self.config.max_backoff)),
            None => wait,
        }
    }

    /// Calls until success, a non-retryable error, or the retries are spent. Returns the answer
    /// and the number of tries, or the last error and the number of tries.
    pub fn complete(&self, prompt: &str, seed: u64) -> (Result<String, CallError>, usize) {
        let mut state = seed ^ 0x5851_f42d_4c95_7f2d;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_once(prompt) {
                Ok(text) => return (Ok(text), attempt),
                Err(e) if !e.retryable || attempt > self.config.max_retries => {
                    return (Err(e), attempt);
                }
                Err(e) => {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let jitter = (state >> 11) as f64 / (1u64 << 53) as f64;
                    std::thread::sleep(self.backoff(attempt, e.retry_after, jitter));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_blocks_are_removed() {
        assert_eq!(
            strip_think("<think>hmm\nlet me see</think>\n\nAnswer."),
            "Answer."
        );
        assert_eq!(
            strip_think("A <think>x</think>B<think>y</think> C"),
            "A B C"
        );
        assert_eq!(strip_think("<think>cut off by the limit"), "");
        assert_eq!(strip_think("reasoning</think>Final"), "Final");
        assert_eq!(strip_think("plain"), "plain");
    }

    #[test]
    fn urls_and_backoff() {
        let mut c = ClientConfig::new("http://h:1/", "m");
        assert_eq!(c.url(), "http://h:1/v1/chat/completions");
        c.base_url = "https://api.deepseek.com/v1".into();
        assert_eq!(c.url(), "https://api.deepseek.com/v1/chat/completions");
        c.backoff = Duration::from_millis(100);
        c.max_backoff = Duration::from_secs(1);
        let client = ChatClient::new(c);
        assert_eq!(client.backoff(1, None, 1.0), Duration::from_millis(100));
        assert_eq!(client.backoff(3, None, 1.0), Duration::from_millis(400));
        assert_eq!(client.backoff(3, None, 0.0), Duration::from_millis(200));
        assert_eq!(client.backoff(10, None, 1.0), Duration::from_secs(1));
        assert_eq!(
            client.backoff(1, Some(0.5), 0.0),
            Duration::from_millis(500)
        );
        assert_eq!(client.backoff(1, Some(90.0), 0.0), Duration::from_secs(1));
    }

    #[test]
    fn the_frequency_penalty_is_sent_only_when_set() {
        let mut config = ClientConfig::new("http://127.0.0.1:1", "m");
        config.max_tokens = 44;
        let body = ChatClient::new(config.clone()).request_body("Item: x");
        assert_eq!(body["max_tokens"], 44);
        assert_eq!(body["messages"][0]["content"], "Item: x");
        assert!(body.get("frequency_penalty").is_none());
        config.frequency_penalty = Some(0.5);
        let body = ChatClient::new(config).request_body("Item: x");
        assert_eq!(body["frequency_penalty"], 0.5);
    }

    #[test]
    fn the_key_is_never_debug_printed() {
        let mut c = ClientConfig::new("http://h", "m");
        c.api_key = Some("sk-secret-123".into());
        assert!(!format!("{c:?}").contains("sk-secret"));
        assert!(!format!("{:?}", ChatClient::new(c)).contains("sk-secret"));
    }
}
