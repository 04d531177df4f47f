//! The metadata proxy (issue 3).
