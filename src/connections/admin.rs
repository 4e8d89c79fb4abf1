//! `/connections` on the admin listener.
