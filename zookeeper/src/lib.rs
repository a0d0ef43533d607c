//! The mini-zookeeper: coordination service and cluster controller (issue 3).
//!
//! Nothing lives here yet; the crate exists so the workspace has its final shape.
