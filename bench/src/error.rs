//! The benchmark's one error type: any error, boxed, with a message. A
//! benchmark run either completes every measurement or stops at the first
//! failure and says why; there is nothing to recover.

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result of every fallible step.
pub type Result<T> = std::result::Result<T, BoxError>;

/// Fails with `message`.
pub fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(message.into().into())
}
