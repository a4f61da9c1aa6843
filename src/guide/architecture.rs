//! Choosing an architecture (tip 1): placeholder, written with the measurements of the examples.
