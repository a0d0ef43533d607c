//! `pehra`: the one command-line tool of Pehra.
//!
//! Today it carries the CoAP client tool; the zookeeper, brokers, producer/consumer
//! tools and `pehra dev` arrive with their issues, and `--help` lists only what works.

mod acl_file;
mod broker_cmd;
mod cluster_cmd;
mod coap_cmd;
mod config_file;
mod dev_cmd;
mod device_sim_cmd;
mod diag;
mod health_args;
mod keys_cmd;
mod metrics_http;
mod pehra_cmd;
mod process_tree;
mod security_args;
mod zk_cmd;

use clap::{Parser, Subcommand};

/// mimalloc: the CoAP hot path makes many small allocations (coap-lite's packet
/// representation); glibc malloc/free were a third of the instructions per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Pehra: CoAP/UDP edge messaging for low-power devices.
#[derive(Parser)]
#[command(name = "pehra", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local cluster: a zookeeper and brokers on loopback, a demo producer and
    /// consumer, and a live view (the main job).
    Dev(dev_cmd::DevArgs),
    /// Run the mini-zookeeper (coordination service) on this machine.
    Zookeeper(Box<zk_cmd::ServeArgs>),
    /// Read, write and watch znodes in a running zookeeper.
    Zk(zk_cmd::ZkArgs),
    /// Run a broker (partition logs, produce and fetch over CoAP).
    Broker(Box<broker_cmd::BrokerArgs>),
    /// Create, list, describe and delete topics.
    Topic(broker_cmd::TopicArgs),
    /// Send records to a topic (each line of standard input, or -m).
    Produce(broker_cmd::ProduceArgs),
    /// Print a topic's records.
    Consume(broker_cmd::ConsumeArgs),
    /// Show the cluster (brokers, topics, partitions) and rebalance its replicas.
    Cluster(cluster_cmd::ClusterArgs),
    /// PEHRA, the energy-saving protocol: its state, and the admin's switch.
    Pehra(pehra_cmd::PehraArgs),
    /// Send one CoAP request (or observe a resource) and print the response.
    Coap(coap_cmd::CoapArgs),
    /// Simulate battery devices running the firmware's node loop against the brokers.
    DeviceSim(device_sim_cmd::DeviceSimArgs),
    /// Make and manage identities and credential files: init, add, revoke, rotate, list.
    Keys(keys_cmd::KeysArgs),
    /// Show the access-control policy (defaults and an ACL file) and check requests.
    Acl(acl_file::AclArgs),
    /// Configuration files for `pehra zookeeper` and `pehra broker` (--config FILE):
    /// check one.
    Config(config_file::ConfigArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PEHRA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The periodic timers of an idle process wake it once each (issue 19).
    pehra_shared::driver::clock::use_kernel_timers(true);
    // `pehra zookeeper|broker --config FILE`: the file's settings go in as arguments.
    let args = match config_file::expand_args(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("pehra: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Coap(args) => coap_cmd::run(args).await,
        Command::Dev(args) => dev_cmd::run(args).await,
        Command::Zookeeper(args) => zk_cmd::serve(*args).await,
        Command::Zk(args) => zk_cmd::run(args).await,
        Command::Broker(args) => broker_cmd::broker(*args).await,
        Command::Topic(args) => broker_cmd::topic(args).await,
        Command::Produce(args) => broker_cmd::produce(args).await,
        Command::Consume(args) => broker_cmd::consume(args).await,
        Command::Cluster(args) => cluster_cmd::cluster(args).await,
        Command::Pehra(args) => pehra_cmd::run(args).await,
        Command::DeviceSim(args) => device_sim_cmd::run(args).await,
        Command::Keys(args) => keys_cmd::run(args),
        Command::Acl(args) => acl_file::run(args),
        Command::Config(args) => config_file::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pehra: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, joined by ": ". A cause is left out where the message
/// before it already ends with it: the library errors name their source in their own
/// message too (they are also shown alone, to peers), and `{:#}` would say it twice.
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.is_empty() {
            text = cause;
        } else if !text.ends_with(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// Listens for Ctrl-C (SIGINT) and SIGTERM from this call on: the future resolves on the
/// first that arrives after the call, also one that arrives before it is first polled.
/// Make it once and poll it where the program waits: a listener made anew in each round
/// of a loop misses a signal that comes between two rounds (`pehra dev` once ignored a
/// Ctrl-C that way and never stopped).
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).expect("install a SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::error_chain;
    use anyhow::Context;
    use pehra_broker::BrokerError;

    /// A signal that arrives after the listener is made but before it is awaited (the
    /// program busy elsewhere) is not lost.
    #[tokio::test]
    async fn a_shutdown_signal_sent_before_the_wait_is_seen() {
        let shutdown = super::shutdown_signal();
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
            .expect("signal this process");
        tokio::time::timeout(std::time::Duration::from_secs(10), shutdown)
            .await
            .expect("the signal is seen");
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let source = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let bind = BrokerError::Bind {
            addr: "127.0.0.1:9".parse().unwrap(),
            source,
        };
        let error = Err::<(), _>(bind).context("starting broker 1").unwrap_err();
        assert_eq!(
            error_chain(&error),
            "starting broker 1: cannot listen on 127.0.0.1:9: address in use"
        );
        let error = anyhow::anyhow!("disk full").context("writing");
        assert_eq!(error_chain(&error), "writing: disk full");
    }
}
