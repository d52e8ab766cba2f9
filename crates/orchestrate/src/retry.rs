//! Retries with exponential backoff and full jitter, for failures that may pass (a storage
//! error, a busy database, a webhook answering 503). The caller says which errors are worth
//! retrying: bad data is permanent and fails at once.

use shoplake_core::OrchestrateConfig;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (1 = no retry).
    pub max_attempts: u32,
    /// Ceiling of the first retry's delay; doubles with every retry.
    pub base: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Whether an error may go away when the operation is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transience {
    /// Try again after a backoff delay.
    Transient,
    /// Try again, but not sooner than this (a server's `Retry-After`); capped at `max_delay`.
    RetryAfter(Duration),
    /// Trying again cannot help (bad input, a 400, a missing file): fail now.
    Permanent,
}

impl RetryPolicy {
    /// `retry_attempts`, `retry_base_ms` and `retry_max_ms` of `[orchestrate]`.
    pub fn from_config(c: &OrchestrateConfig) -> RetryPolicy {
        RetryPolicy {
            max_attempts: c.retry_attempts.max(1),
            base: Duration::from_millis(c.retry_base_ms),
            max_delay: Duration::from_millis(c.retry_max_ms),
        }
    }

    /// The same policy with another number of attempts.
    pub fn with_attempts(self, max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            ..self
        }
    }

    /// The longest delay before retry number `retry` (0 = the first retry):
    /// `min(max_delay, base * 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The delay before retry number `retry` (0 = the first retry): full jitter, a uniformly
    /// random time in `[0, ceiling(retry)]`, so many clients failing together do not retry in
    /// step.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry).as_nanos() as u64;
        Duration::from_nanos(random_u64() % ceiling.saturating_add(1))
    }

    /// The delay before retry number `retry` given how the last error was classified.
    pub fn delay_for(&self, retry: u32, transience: Transience) -> Duration {
        match transience {
            Transience::RetryAfter(d) => d.min(self.max_delay),
            _ => self.delay(retry),
        }
    }
}

/// Run `op` until it succeeds, fails permanently (as `classify` says) or has been tried
/// `policy.max_attempts` times; the last error is returned. Every retry is logged with the
/// attempt, the delay and the error; `what` names the operation in those lines.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    classify: impl Fn(&E) -> Transience,
    mut op: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let transience = classify(&e);
                if transience == Transience::Permanent {
                    if attempt > 1 {
                        tracing::warn!(what, attempt, error = %e, "permanent failure, not retried");
                    }
                    return Err(e);
                }
                if attempt >= policy.max_attempts {
                    tracing::warn!(what, attempt, error = %e, "giving up after {attempt} attempts");
                    return Err(e);
                }
                let delay = policy.delay_for(attempt - 1, transience);
                tracing::info!(
                    what,
                    attempt,
                    max_attempts = policy.max_attempts,
                    delay_ms = delay.as_millis() as u64,
                    error = %e,
                    "transient failure, retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// A small random number generator for jitter: splitmix64 over the clock and a counter. Not for
/// secrets; good enough to spread retries apart.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, PartialEq)]
    enum Fail {
        Busy,
        Bad,
    }
    impl Display for Fail {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }
    fn classify(e: &Fail) -> Transience {
        match e {
            Fail::Busy => Transience::Transient,
            Fail::Bad => Transience::Permanent,
        }
    }

    /// Real sleeps of a few milliseconds at most.
    fn quick() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    #[test]
    fn delays_stay_within_the_full_jitter_bounds() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(1), Duration::from_millis(200));
        assert_eq!(p.ceiling(3), Duration::from_millis(800));
        assert_eq!(p.ceiling(4), Duration::from_millis(1000));
        assert_eq!(p.ceiling(200), Duration::from_millis(1000));
        for retry in 0..8 {
            let delays: Vec<_> = (0..200).map(|_| p.delay(retry)).collect();
            assert!(delays.iter().all(|d| *d <= p.ceiling(retry)), "{retry}");
            // Jitter: the delays differ, and some fall in the lower half.
            let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
            assert!(distinct.len() > 100, "{retry}: {}", distinct.len());
            assert!(delays.iter().any(|d| *d < p.ceiling(retry) / 2), "{retry}");
        }
        assert_eq!(
            p.delay_for(0, Transience::RetryAfter(Duration::from_secs(5))),
            Duration::from_millis(1000),
            "Retry-After is capped at max_delay"
        );
        assert_eq!(
            p.delay_for(0, Transience::RetryAfter(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn defaults_and_config() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.base, Duration::from_millis(200));
        assert_eq!(p.max_delay, Duration::from_secs(30));
        assert_eq!(RetryPolicy::from_config(&OrchestrateConfig::default()), p);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = Cell::new(0);
        let r: Result<(), Fail> = retry(&quick(), "test", classify, || {
            calls.set(calls.get() + 1);
            async { Err(Fail::Bad) }
        })
        .await;
        assert_eq!(r, Err(Fail::Bad));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test]
    async fn transient_errors_are_retried_up_to_the_limit() {
        let calls = Cell::new(0);
        let p = quick();
        let r: Result<(), Fail> = retry(&p, "test", classify, || {
            calls.set(calls.get() + 1);
            async { Err(Fail::Busy) }
        })
        .await;
        assert_eq!(r, Err(Fail::Busy));
        assert_eq!(calls.get(), 5);
        let calls = Cell::new(0);
        let r: Result<(), Fail> = retry(&p.with_attempts(1), "test", classify, || {
            calls.set(calls.get() + 1);
            async { Err(Fail::Busy) }
        })
        .await;
        assert_eq!(
            (r, calls.get()),
            (Err(Fail::Busy), 1),
            "one attempt: no retry"
        );
    }

    #[tokio::test]
    async fn a_transient_error_then_success() {
        let calls = Cell::new(0);
        let r = retry(&quick(), "test", classify, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n < 3 { Err(Fail::Busy) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r, Ok(3));
        // A permanent error after transient ones stops at once.
        let calls = Cell::new(0);
        let r: Result<(), Fail> = retry(&quick(), "test", classify, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { Err(if n < 2 { Fail::Busy } else { Fail::Bad }) }
        })
        .await;
        assert_eq!((r, calls.get()), (Err(Fail::Bad), 2));
    }
}
