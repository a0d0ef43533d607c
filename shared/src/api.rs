//! Glue between the CoAP messages and the CBOR wire types: how every Pehra service reads
//! a request body and writes a response or an error.

use crate::coap::{option, Code, Request, Response, CONTENT_FORMAT_CBOR};
use crate::wire::{self, ErrorBody, ErrorKind};
use alloc::{format, string::String};
use serde::{de::DeserializeOwned, Serialize};

/// A CBOR response with `code` (Content-Format 60).
pub fn cbor_response<T: Serialize>(code: Code, value: &T) -> Response {
    match wire::encode(value) {
        Ok(bytes) => Response::new(code)
            .with_payload(bytes)
            .with_content_format(CONTENT_FORMAT_CBOR),
        Err(e) => error_response(
            ErrorKind::Internal,
            &format!("cannot encode the response: {e}"),
        ),
    }
}

/// An error response: the kind's CoAP code and a CBOR [`ErrorBody`] saying what was wrong.
pub fn error_response(kind: ErrorKind, message: &str) -> Response {
    let body = ErrorBody::new(kind, message);
    let bytes = wire::encode(&body).unwrap_or_default();
    Response::new(Code(kind.coap_code()))
        .with_payload(bytes)
        .with_content_format(CONTENT_FORMAT_CBOR)
}

/// Decodes a request's CBOR body. No Content-Format means CBOR; another format gets 4.15
/// and a malformed body 4.00, each as the error response to send.
pub fn decode_request<T: DeserializeOwned>(request: &Request) -> Result<T, Response> {
    match request.content_format() {
        None | Some(CONTENT_FORMAT_CBOR) => {}
        Some(other) => {
            return Err(error_response(
                ErrorKind::UnsupportedContentFormat,
                &format!("Content-Format {other} is not accepted here: send CBOR (60)"),
            ))
        }
    }
    wire::decode(request.payload())
        .map_err(|e| error_response(ErrorKind::Malformed, &format!("malformed CBOR body: {e}")))
}

/// What a Pehra response means for a client: the decoded CBOR body of a success, or
/// the error it carries.
pub fn decode_response<T: DeserializeOwned>(response: &Response) -> Result<T, ErrorBody> {
    if !response.code().is_success() {
        return Err(response_error(response));
    }
    wire::decode(response.payload()).map_err(|e| {
        ErrorBody::new(
            ErrorKind::Malformed,
            format!("malformed CBOR in the response: {e}"),
        )
    })
}

/// The error an error response carries: its CBOR [`ErrorBody`], or, from a peer that
/// sent diagnostic text (or nothing), a body made from the code and that text.
pub fn response_error(response: &Response) -> ErrorBody {
    if response.content_format() == Some(CONTENT_FORMAT_CBOR) {
        if let Ok(body) = wire::decode::<ErrorBody>(response.payload()) {
            return body;
        }
    }
    let mut text = String::from_utf8_lossy(response.payload()).into_owned();
    if text.is_empty() && response.code() == Code::UNAUTHORIZED {
        // A server with security on answers a plain request with the bare code.
        text = "not authenticated: this server takes only OSCORE-protected requests (give --credentials FILE, made by pehra keys)".into();
    }
    let kind = match response.code() {
        Code::NOT_FOUND => ErrorKind::NotFound,
        Code::UNAUTHORIZED => ErrorKind::Unauthorized,
        Code::METHOD_NOT_ALLOWED => ErrorKind::MethodNotAllowed,
        Code::PRECONDITION_FAILED => ErrorKind::VersionMismatch,
        Code::REQUEST_ENTITY_TOO_LARGE => ErrorKind::TooLarge,
        Code::UNSUPPORTED_CONTENT_FORMAT => ErrorKind::UnsupportedContentFormat,
        Code::SERVICE_UNAVAILABLE => ErrorKind::Busy,
        c if c.class() == 4 => ErrorKind::Malformed,
        _ => ErrorKind::Internal,
    };
    ErrorBody::new(kind, format!("{} {}", response.code(), text))
}

/// A version as an ETag / If-Match value: 4 bytes, big-endian.
pub fn version_tag(version: u32) -> [u8; 4] {
    version.to_be_bytes()
}

/// The version an If-Match option carries, if any; `Err` if it is not 4 bytes.
pub fn if_match_version(request: &Request) -> Result<Option<u32>, Response> {
    match request.option(option::IF_MATCH) {
        None => Ok(None),
        Some(v) => <[u8; 4]>::try_from(v)
            .map(|b| Some(u32::from_be_bytes(b)))
            .map_err(|_| {
                error_response(
                    ErrorKind::Malformed,
                    "If-Match must carry a 4-byte version (the ETag of a GET)",
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SyncResponse;

    #[test]
    fn responses_round_trip_through_the_helpers() {
        let ok = cbor_response(Code::CONTENT, &SyncResponse { zxid: 9 });
        assert_eq!(ok.content_format(), Some(60));
        assert_eq!(decode_response::<SyncResponse>(&ok).unwrap().zxid, 9);

        let err = error_response(ErrorKind::VersionMismatch, "version mismatch: /a is at 3");
        assert_eq!(err.code(), Code::PRECONDITION_FAILED);
        let body = decode_response::<SyncResponse>(&err).unwrap_err();
        assert_eq!(body.error, ErrorKind::VersionMismatch);
        assert_eq!(body.message, "version mismatch: /a is at 3");

        let text = Response::error(Code::NOT_FOUND, "no such resource");
        assert_eq!(response_error(&text).error, ErrorKind::NotFound);
    }

    #[test]
    fn request_bodies_are_checked() {
        let bad_format = Request::post("x")
            .with_payload(*b"{}")
            .with_content_format(50);
        assert_eq!(
            decode_request::<SyncResponse>(&bad_format)
                .unwrap_err()
                .code(),
            Code::UNSUPPORTED_CONTENT_FORMAT
        );
        let garbage = Request::post("x").with_payload(*b"\xff\x00");
        assert_eq!(
            decode_request::<SyncResponse>(&garbage).unwrap_err().code(),
            Code::BAD_REQUEST
        );
        let tag = Request::put("x").with_option(option::IF_MATCH, version_tag(7));
        assert_eq!(if_match_version(&tag).unwrap(), Some(7));
        let short = Request::put("x").with_option(option::IF_MATCH, [1u8]);
        assert!(if_match_version(&short).is_err());
    }
}
