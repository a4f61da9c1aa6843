//! Receptive field arithmetic (being written).
