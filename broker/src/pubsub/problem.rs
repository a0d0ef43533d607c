//! Error responses of the pub-sub interface as concise problem details (RFC 9290,
//! `application/concise-problem-details+cbor`, Content-Format 257), which standard
//! clients can show: `{-1: title, -2: detail}`.

use ciborium::Value;
use pehra_shared::coap::{Code, Response};

/// The Content-Format of `application/concise-problem-details+cbor` (RFC 9290).
pub const CONTENT_FORMAT_PROBLEM_DETAILS: u16 = 257;

/// An error response with `code` and a problem-details body saying what was wrong.
pub fn problem(code: Code, detail: &str) -> Response {
    let body = Value::Map(vec![
        (Value::Integer((-1).into()), Value::Text(title(code).into())),
        (Value::Integer((-2).into()), Value::Text(detail.into())),
    ]);
    Response::new(code)
        .with_payload(super::properties::encode(&body))
        .with_content_format(CONTENT_FORMAT_PROBLEM_DETAILS)
}

/// The RFC 7252 name of an error code.
fn title(code: Code) -> &'static str {
    match code {
        Code::BAD_REQUEST => "Bad Request",
        Code::UNAUTHORIZED => "Unauthorized",
        Code::FORBIDDEN => "Forbidden",
        Code::NOT_FOUND => "Not Found",
        Code::METHOD_NOT_ALLOWED => "Method Not Allowed",
        Code::NOT_ACCEPTABLE => "Not Acceptable",
        Code::CONFLICT => "Conflict",
        Code::PRECONDITION_FAILED => "Precondition Failed",
        Code::REQUEST_ENTITY_TOO_LARGE => "Request Entity Too Large",
        Code::UNSUPPORTED_CONTENT_FORMAT => "Unsupported Content-Format",
        Code::INTERNAL_SERVER_ERROR => "Internal Server Error",
        Code::NOT_IMPLEMENTED => "Not Implemented",
        Code::SERVICE_UNAVAILABLE => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_rfc9290_maps() {
        let response = problem(Code::PRECONDITION_FAILED, "the topic data changed");
        assert_eq!(response.code(), Code::PRECONDITION_FAILED);
        assert_eq!(
            response.content_format(),
            Some(CONTENT_FORMAT_PROBLEM_DETAILS)
        );
        let body: Value = ciborium::from_reader(response.payload()).unwrap();
        assert_eq!(
            body,
            Value::Map(vec![
                (
                    Value::Integer((-1).into()),
                    Value::Text("Precondition Failed".into())
                ),
                (
                    Value::Integer((-2).into()),
                    Value::Text("the topic data changed".into())
                ),
            ])
        );
    }
}
