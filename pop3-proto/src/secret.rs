//! A wrapper that keeps credentials out of logs.

use std::fmt;

/// A value that must not appear in logs: passwords, digests, SASL payloads.
///
/// `Debug` prints `Secret(..)` whatever the value, so an event or request can
/// be logged with `{:?}` without leaking a password. Read the value with
/// [`Secret::expose`] where it is really needed (e.g. to verify it).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Borrows the secret value.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the secret value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(format!("{:#?}", Some(&s)), "Some(\n    Secret(..),\n)");
        assert_eq!(s.expose(), "hunter2");
    }
}
