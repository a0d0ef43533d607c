//! Conditional requests (RFC 7252 §5.10.8): If-Match and If-None-Match, evaluated
//! against the current state of the target resource. Pure: the server decides where the
//! state comes from and makes the evaluation and the write one step.

use super::{option, Request};
use alloc::vec::Vec;

/// The preconditions a request carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// If-Match values (RFC 7252 §5.10.8.1): the request applies if the resource exists
    /// and one of them is its current ETag; an empty value matches any existing
    /// representation. Empty list: no If-Match.
    pub if_match: Vec<Vec<u8>>,
    /// If-None-Match (RFC 7252 §5.10.8.2): the request applies only if the resource
    /// does not exist.
    pub if_none_match: bool,
}

/// The target resource as a condition sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Current<'a> {
    /// It does not exist.
    Absent,
    /// It exists, with this ETag (`None`: it has none, so only an empty If-Match
    /// matches).
    Present(Option<&'a [u8]>),
}

/// A precondition did not hold: answer 4.12 Precondition Failed and change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConditionFailed {
    /// If-Match, and the resource is absent or none of the values is its ETag.
    #[error("If-Match: the resource's current ETag is none of those given (or it does not exist)")]
    IfMatch,
    /// If-None-Match, and the resource exists.
    #[error("If-None-Match: the resource exists")]
    IfNoneMatch,
}

impl Conditions {
    /// The conditions of `request` (every If-Match value, and If-None-Match).
    pub fn of(request: &Request) -> Conditions {
        Conditions {
            if_match: request
                .options(option::IF_MATCH)
                .map(<[u8]>::to_vec)
                .collect(),
            if_none_match: request.option(option::IF_NONE_MATCH).is_some(),
        }
    }

    /// Whether the request carries no condition at all.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_empty() && !self.if_none_match
    }

    /// Evaluates the conditions against the resource as it is now.
    pub fn check(&self, current: Current<'_>) -> Result<(), ConditionFailed> {
        if !self.if_match.is_empty() {
            let matched = match current {
                Current::Absent => false,
                Current::Present(etag) => self
                    .if_match
                    .iter()
                    .any(|v| v.is_empty() || Some(v.as_slice()) == etag),
            };
            if !matched {
                return Err(ConditionFailed::IfMatch);
            }
        }
        if self.if_none_match && current != Current::Absent {
            return Err(ConditionFailed::IfNoneMatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn with(if_match: &[&[u8]], if_none_match: bool) -> Conditions {
        Conditions {
            if_match: if_match.iter().map(|v| v.to_vec()).collect(),
            if_none_match,
        }
    }

    #[test]
    fn no_condition_always_holds() {
        let none = Conditions::default();
        assert!(none.is_empty());
        assert_eq!(none.check(Current::Absent), Ok(()));
        assert_eq!(none.check(Current::Present(Some(b"x"))), Ok(()));
    }

    #[test]
    fn if_match_needs_a_present_resource_with_one_of_the_etags() {
        let tag = with(&[b"\x01", b"\x02"], false);
        assert_eq!(tag.check(Current::Present(Some(b"\x02"))), Ok(()));
        assert_eq!(
            tag.check(Current::Present(Some(b"\x03"))),
            Err(ConditionFailed::IfMatch)
        );
        assert_eq!(
            tag.check(Current::Present(None)),
            Err(ConditionFailed::IfMatch)
        );
        assert_eq!(tag.check(Current::Absent), Err(ConditionFailed::IfMatch));
    }

    #[test]
    fn an_empty_if_match_means_exists() {
        let exists = with(&[b""], false);
        assert_eq!(exists.check(Current::Present(Some(b"\x07"))), Ok(()));
        assert_eq!(exists.check(Current::Present(None)), Ok(()));
        assert_eq!(exists.check(Current::Absent), Err(ConditionFailed::IfMatch));
    }

    #[test]
    fn if_none_match_needs_an_absent_resource() {
        let create_only = with(&[], true);
        assert_eq!(create_only.check(Current::Absent), Ok(()));
        assert_eq!(
            create_only.check(Current::Present(None)),
            Err(ConditionFailed::IfNoneMatch)
        );
    }

    #[test]
    fn conditions_are_read_from_the_request() {
        let request = Request::put("x")
            .with_option(option::IF_MATCH, vec![1u8, 2])
            .with_option(option::IF_MATCH, Vec::<u8>::new())
            .with_option(option::IF_NONE_MATCH, Vec::<u8>::new());
        let conditions = Conditions::of(&request);
        assert_eq!(conditions.if_match, vec![vec![1u8, 2], vec![]]);
        assert!(conditions.if_none_match);
        assert!(Conditions::of(&Request::put("x")).is_empty());
    }
}
