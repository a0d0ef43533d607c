//! Pehra's CoAP server for `bench/coap.sh`: answers `GET /time` like libcoap's
//! `coap-server-notls` does (a 15-byte text payload with Max-Age: 1), so both servers
//! send the same 27-byte response to the same load.
//!
//! It runs the real driver (engine, router, duplicate cache) on one thread, as libcoap
//! does.

use clap::Parser;
use pehra_shared::coap::{option, Code, Config, Method, Response, ServerSecurity};
use pehra_shared::driver::{Endpoint, Router};
use std::net::SocketAddr;

// The same allocator as the `pehra` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Pehra CoAP server answering GET /time, for benchmarks")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5683")]
    listen: SocketAddr,
    /// Size of the duplicate-detection cache (message IDs remembered).
    #[arg(long, default_value_t = Config::default().dedup_capacity)]
    dedup_capacity: usize,
    /// Take only OSCORE-protected requests from the benchmark identity
    /// (`pehra_bench::bench_oscore`), as a server with security on does.
    #[arg(long)]
    oscore: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let router = Router::new().route(Method::Get, "time", |_| async {
            // Same length as libcoap's "Nov 22 03:21:10".
            Response::content(*b"Jan 01 00:00:00").with_option(option::MAX_AGE, [1u8])
        });
        let config = Config {
            dedup_capacity: args.dedup_capacity,
            ..Config::default()
        };
        let router = if args.oscore {
            router.guard(|incoming| match incoming.identity {
                Some(_) => Ok(()),
                None => Err(Response::error(Code::UNAUTHORIZED, "OSCORE only")),
            })
        } else {
            router
        };
        let endpoint = Endpoint::bind(args.listen, config, router).await?;
        if args.oscore {
            use pehra_bench::bench_oscore;
            let security =
                ServerSecurity::new(bench_oscore::server_kid(), bench_oscore::key_table(), 0);
            endpoint
                .handle()
                .set_server_security(security, Box::new(|_| Ok(())))
                .await?;
        }
        eprintln!("coap-bench-server listening on {}", endpoint.local_addr());
        tokio::signal::ctrl_c().await?;
        endpoint.shutdown().await;
        Ok(())
    })
}
