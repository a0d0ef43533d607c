//! The device firmware core (`#![no_std]`), issue 7.
//!
//! Nothing lives here yet; the crate exists so the workspace has its final shape.
#![no_std]
