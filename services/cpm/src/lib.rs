//! cpm
