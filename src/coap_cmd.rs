//! `pehra coap`: a CoAP client on the command line, built on Pehra's own engine.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pehra_shared::coap::{option, Config, Method, Request, Response, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::{Endpoint, Router};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `pehra coap`.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    pehra coap get coap://127.0.0.1:5683/.well-known/core\n  \
    pehra coap put coap://[::1]/store -d 'hello' -t 0\n  \
    pehra coap get coap://127.0.0.1/counter --observe --count 5\n\n\
    A CBOR response (Content-Format 60) is printed in diagnostic notation, and a text one\n\
    with a newline at the end; --raw writes the payload's bytes exactly as received.\n\
    Exit status: 0 for a 2.xx response, 1 for an error response or a failure.")]
pub struct CoapArgs {
    /// The request method.
    #[arg(value_enum)]
    method: MethodArg,
    /// The resource: coap://HOST[:PORT]/PATH[?QUERY] (port 5683 by default).
    uri: String,
    /// The payload, as text.
    #[arg(short = 'd', long, conflicts_with = "file")]
    data: Option<String>,
    /// Read the payload from a file (`-` for standard input).
    #[arg(short = 'f', long)]
    file: Option<String>,
    /// Content-Format of the payload (0 text, 40 link-format, 50 JSON, 60 CBOR).
    #[arg(short = 't', long)]
    content_format: Option<u16>,
    /// Send the request non-confirmable (no retransmission).
    #[arg(long)]
    non: bool,
    /// Observe the resource and print every notification (GET only).
    #[arg(long)]
    observe: bool,
    /// With --observe: stop after this many notifications.
    #[arg(long, requires = "observe")]
    count: Option<usize>,
    /// Give up after this many seconds (with --observe: stop observing).
    #[arg(long, default_value_t = 95)]
    timeout: u64,
    /// Write the payload's bytes exactly as received (no diagnostic notation, no newline
    /// added).
    #[arg(long)]
    raw: bool,
    /// Print the response code and its options by name on standard error (`Observe: 1`,
    /// `ETag: 0a1b2c3d`, `Content-Format: 60`).
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    Get,
    Post,
    Put,
    Delete,
    Fetch,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Method {
        match m {
            MethodArg::Get => Method::Get,
            MethodArg::Post => Method::Post,
            MethodArg::Put => Method::Put,
            MethodArg::Delete => Method::Delete,
            MethodArg::Fetch => Method::Fetch,
        }
    }
}

/// A parsed `coap://` URI.
#[derive(Debug, PartialEq, Eq)]
struct CoapUri {
    host: String,
    port: u16,
    path_and_query: String,
}

fn parse_uri(uri: &str) -> Result<CoapUri> {
    let rest = uri
        .strip_prefix("coap://")
        .with_context(|| format!("{uri}: only coap:// URIs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .with_context(|| format!("{uri}: unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        bail!("{uri}: no host");
    }
    let port = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("{uri}: bad port {p:?}"))?,
        None => 5683,
    };
    Ok(CoapUri {
        host: host.to_string(),
        port,
        path_and_query: path.to_string(),
    })
}

pub async fn run(args: CoapArgs) -> Result<ExitCode> {
    let uri = parse_uri(&args.uri)?;
    let peer: SocketAddr = tokio::net::lookup_host((uri.host.as_str(), uri.port))
        .await
        .with_context(|| format!("cannot resolve {}", uri.host))?
        .next()
        .with_context(|| format!("{} has no address", uri.host))?;
    let mut request = Request::new(args.method.into(), &uri.path_and_query);
    let payload = match (&args.data, &args.file) {
        (Some(d), _) => Some(d.clone().into_bytes()),
        (None, Some(f)) if f == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
            Some(buf)
        }
        (None, Some(f)) => Some(std::fs::read(f).with_context(|| format!("reading {f}"))?),
        (None, None) => None,
    };
    if let Some(p) = payload {
        request = request.with_payload(p);
    }
    if let Some(cf) = args.content_format {
        request = request.with_content_format(cf);
    }
    if args.non {
        request = request.non_confirmable();
    }
    let local = pehra_shared::driver::any_local_for(peer);
    let endpoint = Endpoint::bind(local, Config::default(), Router::new())
        .await
        .context("binding a UDP socket")?;
    let handle = endpoint.handle();
    let limit = Duration::from_secs(args.timeout);

    if args.observe {
        let mut observation = handle.observe(peer, request).await?;
        let mut seen = 0usize;
        let mut ok = true;
        let deadline = tokio::time::Instant::now() + limit;
        while args.count.is_none_or(|c| seen < c) {
            let next = tokio::time::timeout_at(deadline, observation.next()).await;
            match next {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(e))) => bail!("observing {}: {e}", args.uri),
                Ok(Some(Ok(response))) => {
                    seen += 1;
                    ok = response.code().is_success();
                    print_response(&response, &args)?;
                }
            }
        }
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    let response = tokio::time::timeout(limit, handle.request(peer, request))
        .await
        .with_context(|| format!("no response from {peer} within {}s", args.timeout))?
        .with_context(|| format!("{} {}", method_name(args.method), args.uri))?;
    print_response(&response, &args)?;
    Ok(if response.code().is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn method_name(m: MethodArg) -> Method {
    m.into()
}

fn print_response(response: &Response, args: &CoapArgs) -> Result<()> {
    if args.verbose {
        eprintln!("{}", response.code());
        for (number, values) in response.packet().options() {
            for value in values {
                eprintln!("{}", option::display(*number, value));
            }
        }
    }
    if !response.code().is_success() {
        let reason = String::from_utf8_lossy(response.payload());
        eprintln!(
            "{}{}{}",
            response.code(),
            if reason.is_empty() { "" } else { " " },
            reason
        );
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    if args.raw {
        out.write_all(response.payload())?;
        out.flush()?;
        return Ok(());
    }
    let cbor = (response.content_format() == Some(CONTENT_FORMAT_CBOR))
        .then(|| crate::diag::cbor_to_diagnostic(response.payload()))
        .flatten();
    match cbor {
        Some(text) => writeln!(out, "{text}")?,
        None => {
            out.write_all(response.payload())?;
            if !response.payload().ends_with(b"\n") && !response.payload().is_empty() {
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_coap_uris() {
        let u = parse_uri("coap://127.0.0.1:2181/z/a?children").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("127.0.0.1", 2181, "/z/a?children")
        );
        let u = parse_uri("coap://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 5683));
        assert_eq!(parse_uri("coap://host").unwrap().path_and_query, "/");
        assert!(parse_uri("http://x/").is_err());
        assert!(parse_uri("coap://:5683/").is_err());
        assert!(parse_uri("coap://h:notaport/").is_err());
    }
}
