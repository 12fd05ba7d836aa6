//! The HTTP client of the tests: a blocking `ureq` agent that returns every status as a response
//! (a 4xx is something to assert on, not an error) and never goes through a proxy, and the
//! response kept as status, content type and raw bytes.

use std::time::Duration;

use serde_json::Value;

/// How long one HTTP exchange may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP response: status, content type and the body bytes exactly as received.
#[derive(Debug, Clone)]
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as (lossy) text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (fails the test if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts an error response: `status`, a JSON content type, and a body that is exactly
    /// `{"error": "<non-empty message>"}`. Returns the message.
    pub fn expect_error(&self, status: u16, context: &str) -> String {
        assert_eq!(self.status, status, "{context}: body {:?}", self.text());
        assert!(
            self.content_type
                .as_deref()
                .is_some_and(|t| t.starts_with("application/json")),
            "{context}: error content-type is {:?}",
            self.content_type
        );
        let body = self.json();
        let object = body
            .as_object()
            .unwrap_or_else(|| panic!("{context}: error body is not an object: {body}"));
        assert!(
            object.len() == 1 && object.contains_key("error"),
            "{context}: error body is not exactly {{\"error\": ...}}: {body}"
        );
        let message = object["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{context}: error is not a string: {body}"));
        assert!(!message.trim().is_empty(), "{context}: empty error message");
        message.to_owned()
    }
}

/// A blocking HTTP client that returns every status as a response.
#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// An agent: statuses are not errors, a global timeout, no proxy.
    pub fn new() -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .proxy(None)
            .build()
            .into();
        Http { agent }
    }

    /// Sends one request; transport errors (refused, reset) are returned, statuses are not.
    pub fn try_request(
        &self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
    ) -> Result<Resp, ureq::Error> {
        self.try_request_with(method, url, &[], body)
    }

    /// Like [`Http::try_request`], with extra request headers.
    pub fn try_request_with(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, ureq::Error> {
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut response = match body {
            Some(body) => self.agent.run(builder.body(body).expect("request"))?,
            None => self.agent.run(builder.body(()).expect("request"))?,
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()?;
        Ok(Resp {
            status,
            content_type,
            body,
        })
    }

    /// Sends one request, failing the test on a transport error.
    pub fn request(&self, method: &str, url: &str, body: Option<&[u8]>) -> Resp {
        self.try_request(method, url, body)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }
}
