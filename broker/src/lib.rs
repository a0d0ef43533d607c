//! The broker: partition logs on disk, produce/fetch over CoAP, and the client library
//! producers and consumers use.
//!
//! - [`log`]: one partition's append-only log (segments, index, CRCs, recovery);
//! - [`server`]: the broker process (registration, assignments, CoAP resources);
//! - [`client`]: metadata, producing and fetching, topics and consumer offsets.

pub mod client;
pub mod log;
pub mod metrics;
pub mod pubsub;
pub mod server;

pub use server::pehra::PehraConfig;
pub use server::{Broker, BrokerConfig, BrokerError, BROKER_MAX_PAYLOAD};
