//! The one error type of the codec, in a leaf so that every other file can return it.

/// Why bytes are not a Quack message the codec can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes end before the structure does. For a prefix, reading more may help.
    #[error("message truncated at byte {0}")]
    Truncated(usize),
    /// The bytes cannot be a Quack message.
    #[error("malformed message at byte {at}: {what}")]
    Malformed {
        /// Byte offset of the problem.
        at: usize,
        /// What was wrong.
        what: &'static str,
    },
}
