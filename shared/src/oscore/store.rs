//! Many security contexts, found by the kid and kid context a request carries (§8.2
//! step 2): what a server with many clients holds.

use super::context::SecurityContext;
use super::error::OscoreError;
use super::protect::{
    oscore_option, ProtectedResponse, RequestBinding, ResponseNonce, VerifiedRequest,
    VerifiedResponse,
};
use crate::coap::Packet;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// A context's key: its Recipient ID (the kid of the peer's requests) and ID Context.
type Key = (Vec<u8>, Option<Vec<u8>>);

/// Security contexts by (Recipient ID, ID Context).
#[derive(Debug, Default)]
pub struct ContextStore {
    contexts: BTreeMap<Key, SecurityContext>,
}

impl ContextStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a context; returns the one it replaces (same Recipient ID and ID Context).
    pub fn insert(&mut self, context: SecurityContext) -> Option<SecurityContext> {
        let key = (context.recipient_id.clone(), context.id_context.clone());
        self.contexts.insert(key, context)
    }

    /// Removes a context.
    pub fn remove(
        &mut self,
        recipient_id: &[u8],
        id_context: Option<&[u8]>,
    ) -> Option<SecurityContext> {
        self.contexts.remove(&key(recipient_id, id_context))
    }

    /// The context with exactly this Recipient ID and ID Context.
    pub fn get(&self, recipient_id: &[u8], id_context: Option<&[u8]>) -> Option<&SecurityContext> {
        self.contexts.get(&key(recipient_id, id_context))
    }

    /// The context with exactly this Recipient ID and ID Context, mutably.
    pub fn get_mut(
        &mut self,
        recipient_id: &[u8],
        id_context: Option<&[u8]>,
    ) -> Option<&mut SecurityContext> {
        self.contexts.get_mut(&key(recipient_id, id_context))
    }

    /// The context a request with `kid` and `kid_context` is for. With a kid context,
    /// exactly that one (§5); without, the context with that kid and no ID Context, or
    /// else the only context with that kid. Several candidates (the kid alone does not
    /// tell which) is [`OscoreError::UnknownKid`], like none.
    pub fn lookup(
        &mut self,
        kid: &[u8],
        kid_context: Option<&[u8]>,
    ) -> Result<&mut SecurityContext, OscoreError> {
        let key = match kid_context {
            Some(_) => key(kid, kid_context),
            None => {
                let mut with_kid = self
                    .contexts
                    .range(key(kid, None)..)
                    .take_while(|((id, _), _)| id.as_slice() == kid)
                    .map(|(k, _)| k);
                match (with_kid.next(), with_kid.next()) {
                    (Some(only), None) => only.clone(),
                    (Some(first), Some(_)) if first.1.is_none() => first.clone(),
                    _ => return Err(OscoreError::UnknownKid),
                }
            }
        };
        self.contexts.get_mut(&key).ok_or(OscoreError::UnknownKid)
    }

    /// The context a binding was made in; [`OscoreError::MissingContext`] if it is gone.
    pub fn context_for(
        &mut self,
        binding: &RequestBinding,
    ) -> Result<&mut SecurityContext, OscoreError> {
        self.get_mut(binding.recipient_id(), binding.id_context())
            .ok_or(OscoreError::MissingContext)
    }

    /// Finds the context for an OSCORE request and verifies it with
    /// [`SecurityContext::unprotect_request`].
    pub fn unprotect_request(&mut self, outer: &Packet) -> Result<VerifiedRequest, OscoreError> {
        let option = oscore_option(outer)?;
        let kid = option.kid.as_deref().ok_or(OscoreError::MalformedOption)?;
        self.lookup(kid, option.kid_context.as_deref())?
            .unprotect_request(outer)
    }

    /// Protects a response in the binding's context
    /// ([`SecurityContext::protect_response`]).
    pub fn protect_response(
        &mut self,
        binding: &mut RequestBinding,
        response: &Packet,
        nonce: ResponseNonce,
    ) -> Result<ProtectedResponse, OscoreError> {
        self.context_for(binding)?
            .protect_response(binding, response, nonce)
    }

    /// Verifies a response in the binding's context
    /// ([`SecurityContext::unprotect_response`]).
    pub fn unprotect_response(
        &mut self,
        binding: &mut RequestBinding,
        outer: &Packet,
    ) -> Result<VerifiedResponse, OscoreError> {
        self.context_for(binding)?
            .unprotect_response(binding, outer)
    }

    /// How many contexts the store holds.
    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// Every context, by Recipient ID then ID Context.
    pub fn iter(&self) -> impl Iterator<Item = &SecurityContext> {
        self.contexts.values()
    }
}

fn key(recipient_id: &[u8], id_context: Option<&[u8]>) -> Key {
    (recipient_id.to_vec(), id_context.map(<[u8]>::to_vec))
}
