//! The broker: partition logs, replication, producer and consumer clients (issue 4).
//!
//! Nothing lives here yet; the crate exists so the workspace has its final shape.
