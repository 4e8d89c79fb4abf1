//! The OAuth connect flow.
