//! The placement driver (in progress).
