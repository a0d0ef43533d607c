//! The header every segment file starts with (see the [module documentation](super)
//! for the byte layout).

/// The first 8 bytes of every segment file.
pub(super) const LOG_MAGIC: [u8; 8] = *b"PEHRALOG";
/// The segment format version this build writes and reads.
pub(super) const LOG_VERSION: u32 = 2;
/// Segment header: magic + version.
pub(super) const HEADER_LEN: u64 = 12;
