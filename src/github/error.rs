//! The client's error type and how HTTP answers map onto it.

use std::time::Duration;

/// Why a call to GitHub failed. Variants carry a human-readable message that names the method and
/// path (never a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    /// 404: the resource does not exist, or the installation cannot see it.
    #[error("GitHub: not found: {message}")]
    NotFound {
        /// What GitHub said, prefixed with the method and path.
        message: String,
    },
    /// 409: e.g. a deployment's ref could not be merged, or the repository is empty.
    #[error("GitHub: conflict: {message}")]
    Conflict {
        /// What GitHub said, prefixed with the method and path.
        message: String,
    },
    /// 422: GitHub rejected the request's content.
    #[error("GitHub: unprocessable: {message}")]
    Unprocessable {
        /// What GitHub said (with its `errors` list), prefixed with the method and path.
        message: String,
    },
    /// 401: bad credentials (JWT rejected, installation token expired or revoked).
    #[error("GitHub: unauthorized: {message}")]
    Unauthorized {
        /// What GitHub said, prefixed with the method and path.
        message: String,
    },
    /// 403 that is not a rate limit: the app lacks a permission.
    #[error("GitHub: forbidden: {message}")]
    Forbidden {
        /// What GitHub said, prefixed with the method and path.
        message: String,
    },
    /// 429, or a 403 for a primary or secondary rate limit.
    #[error("GitHub: rate limited: {message}")]
    RateLimited {
        /// What GitHub said, prefixed with the method and path.
        message: String,
        /// How long GitHub asked us to wait (`Retry-After` or `x-ratelimit-reset`), if it said.
        retry_after: Option<Duration>,
    },
    /// Any other unsuccessful status (5xx, other 4xx).
    #[error("GitHub: HTTP {code}: {message}")]
    Status {
        /// The HTTP status code.
        code: u16,
        /// What GitHub said, prefixed with the method and path.
        message: String,
    },
    /// A transient failure persisted through every attempt the [`RetryPolicy`] allows.
    ///
    /// [`RetryPolicy`]: super::RetryPolicy
    #[error("GitHub: gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: String,
    },
    /// The request never got an HTTP answer (connection refused/reset, timeout).
    #[error("GitHub: transport: {0}")]
    Transport(String),
    /// The app's key or JWT could not be used.
    #[error("GitHub: app authentication: {0}")]
    Auth(String),
    /// The client is misconfigured (e.g. an unparsable API URL).
    #[error("GitHub: configuration: {0}")]
    Config(String),
    /// GitHub answered 2xx with a body we could not understand.
    #[error("GitHub: unexpected response: {0}")]
    Decode(String),
}

impl GitHubError {
    /// Could the same request succeed if sent again later? True for server errors, rate limits,
    /// transport failures and exhausted retries; false for answers that will not change (404, 409,
    /// 422, 401, 403, other 4xx) and for local problems.
    pub fn is_retryable(&self) -> bool {
        match self {
            GitHubError::Status { code, .. } => *code >= 500,
            GitHubError::RateLimited { .. }
            | GitHubError::RetriesExhausted { .. }
            | GitHubError::Transport(_) => true,
            GitHubError::NotFound { .. }
            | GitHubError::Conflict { .. }
            | GitHubError::Unprocessable { .. }
            | GitHubError::Unauthorized { .. }
            | GitHubError::Forbidden { .. }
            | GitHubError::Auth(_)
            | GitHubError::Config(_)
            | GitHubError::Decode(_) => false,
        }
    }

    /// Is this a 404?
    pub fn is_not_found(&self) -> bool {
        matches!(self, GitHubError::NotFound { .. })
    }

    /// How long the server asked us to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GitHubError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The parts of an unsuccessful answer that decide how it is classified.
#[derive(Debug, Clone, Default)]
pub(crate) struct FailedAnswer<'a> {
    pub status: u16,
    /// `message` from GitHub's JSON error body (or the raw body).
    pub message: &'a str,
    /// The `Retry-After` header, in seconds.
    pub retry_after_s: Option<u64>,
    /// The `x-ratelimit-remaining` header.
    pub ratelimit_remaining: Option<u64>,
    /// The `x-ratelimit-reset` header (seconds since the epoch).
    pub ratelimit_reset_epoch: Option<u64>,
    /// Seconds since the epoch, now.
    pub now_epoch: u64,
}

/// Turn an unsuccessful HTTP answer into a typed error. `what` prefixes the message
/// (`"GET /repos/o/r/pulls/1"`).
pub(crate) fn classify(what: &str, a: &FailedAnswer<'_>) -> GitHubError {
    let message = format!("{what}: {}", a.message);
    let wait = a.retry_after_s.map(Duration::from_secs).or_else(|| {
        a.ratelimit_reset_epoch
            .filter(|_| a.ratelimit_remaining == Some(0))
            .map(|reset| Duration::from_secs(reset.saturating_sub(a.now_epoch)))
    });
    match a.status {
        404 => GitHubError::NotFound { message },
        409 => GitHubError::Conflict { message },
        422 => GitHubError::Unprocessable { message },
        401 => GitHubError::Unauthorized { message },
        429 => GitHubError::RateLimited {
            message,
            retry_after: wait,
        },
        403 => {
            let secondary = a.message.to_ascii_lowercase().contains("rate limit");
            if secondary || a.retry_after_s.is_some() || a.ratelimit_remaining == Some(0) {
                GitHubError::RateLimited {
                    message,
                    retry_after: wait,
                }
            } else {
                GitHubError::Forbidden { message }
            }
        }
        code => GitHubError::Status { code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, message: &str) -> FailedAnswer<'_> {
        FailedAnswer {
            status,
            message,
            now_epoch: 1_000,
            ..FailedAnswer::default()
        }
    }

    #[test]
    fn final_statuses_are_typed_and_not_retryable() {
        let e = classify("GET /x", &answer(404, "Not Found"));
        assert_eq!(
            e,
            GitHubError::NotFound {
                message: "GET /x: Not Found".into()
            }
        );
        assert!(!e.is_retryable());
        assert!(matches!(
            classify("", &answer(409, "c")),
            GitHubError::Conflict { .. }
        ));
        assert!(matches!(
            classify("", &answer(422, "Validation Failed")),
            GitHubError::Unprocessable { .. }
        ));
        assert!(matches!(
            classify("", &answer(401, "Bad credentials")),
            GitHubError::Unauthorized { .. }
        ));
        let forbidden = classify("", &answer(403, "Resource not accessible by integration"));
        assert!(matches!(forbidden, GitHubError::Forbidden { .. }));
        assert!(!forbidden.is_retryable());
        let teapot = classify("", &answer(418, "I'm a teapot"));
        assert_eq!(
            teapot,
            GitHubError::Status {
                code: 418,
                message: ": I'm a teapot".into()
            }
        );
        assert!(!teapot.is_retryable());
    }

    #[test]
    fn server_errors_and_rate_limits_are_retryable() {
        assert!(classify("", &answer(500, "oops")).is_retryable());
        assert!(classify("", &answer(502, "bad gateway")).is_retryable());
        let e = classify("", &answer(429, "slow down"));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), None);
    }

    #[test]
    fn secondary_rate_limit_403_is_recognised_three_ways() {
        let by_message = classify(
            "",
            &answer(
                403,
                "You have exceeded a secondary rate limit. Please wait.",
            ),
        );
        assert!(matches!(by_message, GitHubError::RateLimited { .. }));

        let by_header = classify(
            "",
            &FailedAnswer {
                retry_after_s: Some(7),
                ..answer(403, "Forbidden")
            },
        );
        assert_eq!(by_header.retry_after(), Some(Duration::from_secs(7)));

        let primary = classify(
            "",
            &FailedAnswer {
                ratelimit_remaining: Some(0),
                ratelimit_reset_epoch: Some(1_042),
                ..answer(403, "API rate limit exceeded")
            },
        );
        assert_eq!(primary.retry_after(), Some(Duration::from_secs(42)));
        assert!(primary.is_retryable());
    }

    #[test]
    fn retry_after_wins_over_reset_and_reset_in_the_past_is_zero() {
        let both = classify(
            "",
            &FailedAnswer {
                retry_after_s: Some(3),
                ratelimit_remaining: Some(0),
                ratelimit_reset_epoch: Some(5_000),
                ..answer(429, "")
            },
        );
        assert_eq!(both.retry_after(), Some(Duration::from_secs(3)));
        let past = classify(
            "",
            &FailedAnswer {
                ratelimit_remaining: Some(0),
                ratelimit_reset_epoch: Some(10),
                ..answer(429, "")
            },
        );
        assert_eq!(past.retry_after(), Some(Duration::ZERO));
    }
}
