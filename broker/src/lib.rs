//! The broker: partition logs on disk, produce/fetch over CoAP, and the client library
//! producers and consumers use.
//!
//! - [`log`]: one partition's append-only log (segments, index, CRCs, recovery);
//! - [`server`]: the broker process (registration, assignments, CoAP resources);
//! - [`client`]: metadata, producing and fetching, topics and consumer offsets.

pub mod client;
mod limits;
pub mod log;
pub mod pubsub;
pub mod replica;
pub mod server;

pub use limits::BROKER_MAX_PAYLOAD;
pub use server::metrics;

pub use server::pehra::PehraConfig;
pub use server::{Broker, BrokerConfig, BrokerError};
